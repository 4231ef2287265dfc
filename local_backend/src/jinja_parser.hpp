// Lexer and parser of the Jinja subset for chat templates.
//
// Syntax and whitespace handling follow Jinja2 3.x (jinja.palletsprojects.com
// "Template Designer Documentation"; jinja2/lexer.py, jinja2/parser.py) as
// Hugging Face transformers configures it (chat_template_utils.py
// `_compile_jinja_template`: trim_blocks=True, lstrip_blocks=True, the
// loopcontrols extension, and its own {% generation %} tag):
//   - `{%-`, `{{-`, `{#-` strip all whitespace before the tag; `-%}`, `-}}`,
//     `-#}` all whitespace after it;
//   - trim_blocks: the first newline after `%}` or `#}` is removed (not after
//     `+%}`);
//   - lstrip_blocks: spaces and tabs between the start of a line and `{%` or
//     `{#` are removed (not before `{%+`);
//   - "\r\n" and "\r" become "\n", and one trailing newline is dropped
//     (keep_trailing_newline=False).
// Statements: if/elif/else, for (tuple targets, `if` filter, else), set
// (names, tuples, namespace attributes, block set), macro, break, continue,
// raw, generation. Filters and tests are checked against the interpreter's
// list here, so a template using one outside the subset fails to parse with a
// message naming it and its line.
#pragma once

#include <memory>
#include <string_view>

#include "jinja_ast.hpp"

namespace tollgate::local_backend::jinja {

// Throws TemplateError ("line N: ...") on a syntax error or a construct
// outside the subset.
std::unique_ptr<Program> Parse(std::string_view source);

}  // namespace tollgate::local_backend::jinja
