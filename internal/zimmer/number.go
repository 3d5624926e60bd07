package zimmer

import (
	"errors"
	"strconv"
	"strings"
)

// Why a number literal or numeric string is not an int64.
var (
	errFraction = errors.New("fraction")
	errOverflow = errors.New("overflow")
	errSyntax   = errors.New("syntax")
)

// parseJSONInt turns a JSON number literal into an int64. Literals with a
// zero fraction or an exponent ("42.0", "4.2e1") are accepted when their
// value is a whole number, as pydantic does; the work is done on the
// decimal digits, so huge exponents cost nothing and no precision is lost.
func parseJSONInt(lit string) (int64, error) {
	neg := strings.HasPrefix(lit, "-")
	if neg {
		lit = lit[1:]
	}

	// Split the literal into integer, fraction and exponent parts.
	mant, expPart, hasExp := strings.Cut(lit, "e")
	if !hasExp {
		mant, expPart, hasExp = strings.Cut(lit, "E")
	}
	intPart, frac, hasFrac := strings.Cut(mant, ".")
	if !isDigits(intPart) || (hasFrac && !isDigits(frac)) {
		return 0, errSyntax
	}
	if len(intPart) > 1 && intPart[0] == '0' {
		return 0, errSyntax
	}

	// The value is digits × 10^exp.
	digits := strings.TrimLeft(intPart+frac, "0")
	exp := int64(-len(frac))
	if hasExp {
		e, err := parseExponent(expPart)
		switch {
		case errors.Is(err, errSyntax):
			return 0, err
		case err != nil && digits == "":
			return 0, nil
		case err != nil:
			return 0, err
		}
		exp += e
	}
	if digits == "" {
		return 0, nil
	}
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	digits = trimmed

	// A negative exponent left now means a non-zero fraction.
	if exp < 0 {
		return 0, errFraction
	}
	if int64(len(digits))+exp > 19 {
		return 0, errOverflow
	}
	full := digits + strings.Repeat("0", int(exp))
	if neg {
		full = "-" + full
	}
	v, err := strconv.ParseInt(full, 10, 64)
	if err != nil {
		return 0, errOverflow
	}
	return v, nil
}

// parseExponent reads an exponent with an optional sign. An exponent too
// large to hold means a fraction when negative and an overflow otherwise.
func parseExponent(s string) (int64, error) {
	sign := ""
	if s != "" && (s[0] == '+' || s[0] == '-') {
		sign, s = s[:1], s[1:]
	}
	if !isDigits(s) {
		return 0, errSyntax
	}
	e, err := strconv.ParseInt(sign+s, 10, 32)
	switch {
	case err == nil:
		return e, nil
	case sign == "-":
		return 0, errFraction
	default:
		return 0, errOverflow
	}
}

// isDigits reports whether s is one or more ASCII digits.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseIntString reads an integer sent as text ("42", " 42 ", "-3"). Only
// decimal digits with an optional minus sign are accepted.
func parseIntString(s string) (int64, error) {
	s = strings.TrimSpace(s)
	digits := strings.TrimPrefix(s, "-")
	if !isDigits(digits) {
		return 0, errSyntax
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errOverflow
	}
	return v, nil
}
