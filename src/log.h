/*
 * Logging: one line per event on stderr (or a file), with an RFC 3339 UTC
 * timestamp, the level and, for request events, the correlation id:
 *   2026-12-04T02:55:00.123Z info [c0ffee] request admitted: 12 prompt tokens
 * Thread-safe (one write(2) per line).
 */
#ifndef ORCD_LOG_H
#define ORCD_LOG_H

enum log_level {
	LOG_ERROR,
	LOG_WARN,
	LOG_INFO,
	LOG_DEBUG,
};

void log_set_level(enum log_level l);
enum log_level log_get_level(void);
/* "error", "warn", "info", "debug"; -1 if unknown. */
int log_level_parse(const char *s);

/* corr may be NULL (not a request event). */
void log_msg(enum log_level l, const char *corr, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_enabled(l) ((l) <= log_get_level())
#define log_error(...) log_msg(LOG_ERROR, NULL, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, NULL, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, NULL, __VA_ARGS__); } while (0)

#endif
