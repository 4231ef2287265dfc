// OpenAI Responses API, outbound half (providers): requests out, responses in.
// wire/include/tollgate/wire/responses.hpp documents the mapping.
#include "tollgate/wire/responses.hpp"
