#include "tollgate/wire/anthropic.hpp"
