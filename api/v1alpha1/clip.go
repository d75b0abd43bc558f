package v1alpha1

import "unicode/utf8"

// Clip cuts s to at most max bytes without splitting a UTF-8 sequence,
// marking the cut with "...". Status fields written from what Flux or a
// transport said (messages, notes, event contexts) go through it so that
// they stay within this API's length limits.
func Clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "..."
	cut := max - len(mark)
	if cut < 0 {
		cut = 0
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
