// The migrations/*.sql texts compiled into the library. The definition is
// generated at configure time by billing/cmake/EmbedMigrations.cmake.
#pragma once

#include <span>

namespace tollgate::billing::internal {

struct EmbeddedMigration {
  int version;       // NNN of NNN_name.sql, >= 1
  const char* name;  // "name" of NNN_name.sql
  const char* sql;   // the file's text
};

// In strictly ascending version order (checked by CMake); never empty.
std::span<const EmbeddedMigration> EmbeddedMigrations();

}  // namespace tollgate::billing::internal
