// Outbound Responses codec tests (wire/responses.hpp).
#include "tollgate/wire/responses.hpp"
