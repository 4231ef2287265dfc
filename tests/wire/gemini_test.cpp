#include "tollgate/wire/gemini.hpp"

#include <gtest/gtest.h>
