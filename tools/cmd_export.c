/* bitgrad export — placeholder until its owner lands it. */
#include <stdio.h>

#include "tools/commands.h"

int bg_cmd_export(int argc, char **argv) {
    (void)argc;
    fprintf(stderr, "bitgrad %s: not built yet\n", argv[0]);
    return 2;
}
