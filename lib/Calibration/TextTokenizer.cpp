//===- TextTokenizer.cpp --------------------------------------------------===//

#include "kvprec/Calibration/TextTokenizer.h"

kvprec::calib::TextTokenizer::~TextTokenizer() = default;
