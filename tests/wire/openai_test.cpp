#include "tollgate/wire/openai.hpp"

#include <gtest/gtest.h>
