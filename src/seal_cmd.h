/* `orcd seal` and `orcd verify` (seal_cmd.c; the format is doc/seal.md). */
#ifndef ORCD_SEAL_CMD_H
#define ORCD_SEAL_CMD_H

/* argv[0] is the subcommand.  Exit codes: 0 done / verified, 1 the model
 * does not match its seal (or the signature is bad), 2 usage or an error
 * before the comparison (unreadable model, seal or key). */
int seal_main(int argc, char **argv);
int verify_main(int argc, char **argv);

#endif
