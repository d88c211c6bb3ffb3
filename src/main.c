/*
 * orcd command-line entry: dispatches the subcommands.
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "cpu/quant.h"
#include "generate.h"
#include "seal_cmd.h"
#include "serve.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: orcd COMMAND [options]\n"
	    "\n"
	    "commands:\n"
	    "  serve      the HTTP/SSE server (the default: `orcd [options]` = serve)\n"
	    "             (orcd serve --help for options)\n"
	    "  generate   run one prompt on the CPU engine and print the text\n"
	    "             (orcd generate --help for options)\n"
	    "  seal       digest and sign a model's tensor data into a seal file\n"
	    "             (orcd seal --help; doc/seal.md)\n"
	    "  verify     check a model against its seal file on the CPU\n"
	    "             (orcd verify --help)\n"
	    "  version    print the version and the CPU kernels in use\n"
	    "\n"
	    "See orcd(8) and README.md.\n");
}

int
main(int argc, char **argv)
{
	static char serve_arg[] = "serve";

	if (argc < 2 || argv[1][0] == '-') {
		if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
			usage(stdout);
			return 0;
		}
		if (argc >= 2 && strcmp(argv[1], "--version") == 0)
			goto version;
		/* `orcd [options]` is `orcd serve [options]` */
		argv[0] = serve_arg;
		return serve_main(argc, argv);
	}
	if (strcmp(argv[1], "serve") == 0)
		return serve_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "generate") == 0)
		return generate_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "seal") == 0)
		return seal_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "verify") == 0)
		return verify_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "version") == 0) {
version:
		quant_init();
		printf("orcd %s (CPU kernels: %s; CUDA backend: %s)\n", PACKAGE_VERSION,
		    quant_isa(),
#ifdef ORCD_HAVE_CUDA
		    "built"
#else
		    "not built"
#endif
		    );
		return 0;
	}
	if (strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "orcd: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
