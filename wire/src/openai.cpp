#include "tollgate/wire/openai.hpp"
