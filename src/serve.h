/* `orcd serve`: the daemon's entry point (serve.c). */
#ifndef ORCD_SERVE_H
#define ORCD_SERVE_H

/* argv[0] is "serve". */
int serve_main(int argc, char **argv);

#endif
