/* main.c: orders-payment, the daemon that tokenizes cards and authorizes payments. */
#include "payment.h"

int main(int argc, char **argv)
{
	return consume_main(&payment_handler, argc, argv);
}
