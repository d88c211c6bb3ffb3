/*
 * Helpers for tests that run a real `orcd serve`: start it on a random port
 * (read from its --ready-file), stop it with SIGTERM, raw-socket requests,
 * the test model (the shared stories260K, else a generated tiny model).
 */
#ifndef ORCD_TEST_SERVER_H
#define ORCD_TEST_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct test_server {
	pid_t pid;
	int port;
	char ready[512];
	char log[512];
};

extern char test_model_path[4096];
extern char test_tmpdir[256];
extern const char *test_orcd_bin;

/* Creates the temp dir and finds or generates the model; -1 on failure,
 * 77 when need_curl and curl is not installed. */
int test_server_init(bool need_curl);
/* Removes the temp dir. */
void test_server_cleanup(void);
/* Starts orcd serve with extra flags (NULL-terminated); fails the test
 * unless it becomes ready. */
void test_server_start(struct test_server *s, const char *name, ...);
/* SIGTERM, wait; the exit status (fails the test after 30 s). */
int test_server_stop(struct test_server *s);

double test_now(void);
int test_connect(int port);
void test_send_all(int fd, const char *p, size_t n);
size_t test_recv_until(int fd, char *buf, size_t cap, const char *until, double timeout);
int test_raw_request(int port, const char *req, size_t len, char *resp, size_t cap);
int test_http_post(int port, const char *path, const char *body, const char *extra,
    char *resp, size_t cap);
int test_http_get(int port, const char *path, char *resp, size_t cap);
char *test_run_capture(const char *cmd);
/* The value of a metric series ("name{labels} ") from GET /metrics. */
uint64_t test_metric_value(int port, const char *series);
/* The same as a double; -1 when the series is absent. */
double test_metric_double(int port, const char *series);

#endif
