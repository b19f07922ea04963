/* nubo: the command-line client of the nubo cloud. */
#include "cli/cli.h"

int main(int argc, char **argv)
{
	return nb_cli_main(argc, argv);
}
