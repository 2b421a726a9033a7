#ifndef LETHE_CRDKAFKA_SHIM_H
#define LETHE_CRDKAFKA_SHIM_H
#include <librdkafka/rdkafka.h>
#endif
