/* main.c: orders-cart, the daemon that keeps the PostgreSQL copy of every cart. */
#include "cart.h"

int main(int argc, char **argv)
{
	return consume_main(&cart_handler, argc, argv);
}
