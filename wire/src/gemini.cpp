#include "tollgate/wire/gemini.hpp"
