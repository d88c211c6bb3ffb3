/*
 * Listeners: one evconnlistener per --listen address; accepted sockets
 * become connections (conn.h).  Over max_connections a new socket gets a
 * canned 503 and is closed.
 */
#ifndef ORCD_SERVER_H
#define ORCD_SERVER_H

#include "err.h"

struct orcd;

int server_start(struct orcd *o, struct orcd_err *err);
/* Stops accepting (drain); connections stay. */
void server_stop_listening(struct orcd *o);
void server_free(struct orcd *o);
/* The port the first listener is bound to (after ":0"). */
int server_port(const struct orcd *o);

#endif
