#pragma once

#include "tollgate/billing/log.hpp"

#include <string_view>

namespace tollgate::billing::internal {

// Delivers one message to the handler installed with SetLogHandler.
void Log(LogLevel level, std::string_view message);

}  // namespace tollgate::billing::internal
