#include "tollgate/wire/anthropic.hpp"

#include <gtest/gtest.h>
