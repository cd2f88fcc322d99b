//===- InputCheck.cpp - refuse MLIR text the upstream parser mishandles ---===//

#include "kvprec/InputCheck.h"

using namespace kvprec;

std::optional<InputProblem> kvprec::checkInput(llvm::StringRef text,
                                              unsigned limit) {
  unsigned depth = 0, line = 1, column = 0, stringLine = 0, stringColumn = 0;
  bool inString = false, inComment = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    ++column;
    if (c == '\n') {
      ++line;
      column = 0;
      inComment = false;
      inString = false;
      continue;
    }
    if (inComment)
      continue;
    if (inString) {
      if (c == '\\' && i + 1 < text.size() && text[i + 1] != '\n')
        ++i, ++column;
      else if (c == '"')
        inString = false;
      continue;
    }
    char next = i + 1 < text.size() ? text[i + 1] : '\0';
    char previous = i > 0 ? text[i - 1] : '\0';
    if (c == '"') {
      inString = true;
      stringLine = line;
      stringColumn = column;
    } else if (c == '/' && next == '/') {
      inComment = true;
    } else if (c == '[' || c == '{' || c == '(' || (c == '<' && next != '=')) {
      if (++depth > limit)
        return InputProblem{line, column,
                            "the input nests brackets more than " +
                                std::to_string(limit) +
                                " levels deep, past what kvprec-opt parses "
                                "safely"};
    } else if ((c == ']' || c == '}' || c == ')' ||
                (c == '>' && previous != '-' && next != '=')) &&
               depth > 0) {
      --depth;
    }
  }
  if (inString)
    return InputProblem{stringLine, stringColumn,
                        "the string literal that starts here is not closed "
                        "before the end of the input; the file is truncated"};
  return std::nullopt;
}
