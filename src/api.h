/*
 * HTTP routes (api.c): called by the connection layer for every complete
 * request; answers it or starts a stream.
 */
#ifndef ORCD_API_H
#define ORCD_API_H

struct orcd;
struct conn;

void api_dispatch(struct orcd *o, struct conn *c);

#endif
