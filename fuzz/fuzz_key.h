/* The fixed key the fuzz targets and fuzz/make_seeds.c seal and check with. */
#ifndef INVOKER_FUZZ_KEY_H
#define INVOKER_FUZZ_KEY_H
#define FUZZ_KEY 0x5eed5eedc0ffee11ull
#endif
