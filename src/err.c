/* Error message formatting (see err.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

int
orcd_errf(struct orcd_err *e, const char *fmt, ...)
{
	va_list ap;

	if (e == NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -1;
}

void
orcd_err_prefix(struct orcd_err *e, const char *prefix)
{
	char old[sizeof(e->msg)];
	size_t n;

	if (e == NULL)
		return;
	memcpy(old, e->msg, sizeof(old));
	n = strlen(prefix);
	if (n > sizeof(e->msg) - 3)
		n = sizeof(e->msg) - 3;
	memcpy(e->msg, prefix, n);
	memcpy(e->msg + n, ": ", 2);
	n += 2;
	old[sizeof(old) - 1] = 0;
	strncpy(e->msg + n, old, sizeof(e->msg) - n - 1);
	e->msg[sizeof(e->msg) - 1] = 0;
}
