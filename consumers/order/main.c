/* main.c: orders-order, the daemon that finalizes orders and writes the finance feed. */
#include "order.h"

int main(int argc, char **argv)
{
	return consume_main(&order_handler, argc, argv);
}
