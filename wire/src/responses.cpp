// OpenAI Responses API, inbound half (gateway): requests in, responses out.
// wire/include/tollgate/wire/responses.hpp documents the mapping.
#include "tollgate/wire/responses.hpp"
