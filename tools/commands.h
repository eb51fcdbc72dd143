/* commands.h — the subcommands of the `bitgrad` program, one file each
 * (tools/cmd_<name>.c). Each takes the arguments after its name (argv[0] is
 * the command name) and returns the process exit status: 0 success, 1
 * failure (the error printed on stderr), 2 bad usage. */
#ifndef BG_TOOLS_COMMANDS_H
#define BG_TOOLS_COMMANDS_H

int bg_cmd_demo(int argc, char **argv);
int bg_cmd_finetune(int argc, char **argv);
int bg_cmd_export(int argc, char **argv);
int bg_cmd_infer(int argc, char **argv);
int bg_cmd_plot(int argc, char **argv);
int bg_cmd_lm(int argc, char **argv);
int bg_cmd_generate(int argc, char **argv);
int bg_cmd_ptq(int argc, char **argv);
int bg_cmd_autoquant(int argc, char **argv);

#endif
