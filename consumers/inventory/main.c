/* main.c: orders-inventory, the daemon that reserves stock for each checkout. */
#include "inventory.h"

int main(int argc, char **argv)
{
	return consume_main(&inventory_handler, argc, argv);
}
