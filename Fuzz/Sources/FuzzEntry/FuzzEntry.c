// Why this exists: in a debug build SwiftPM links every executable with `main` aliased to
// `<Module>_main` (so that tests could link the executable), and expects the Swift module
// to define that. Our targets are libraries in all but name (-parse-as-library, no main),
// and libFuzzer's own `main` is then never pulled in. So each `<Module>_main` here hands
// over to libFuzzer's driver with the target's LLVMFuzzerTestOneInput. Every target links
// all of them; only its own is ever called.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#define FUZZ_MAIN(module) \
    int module##_main(int argc, char **argv) { return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput); }

FUZZ_MAIN(FuzzSSE)
FUZZ_MAIN(FuzzJSON)
FUZZ_MAIN(FuzzChatRequest)
FUZZ_MAIN(FuzzConfig)
FUZZ_MAIN(FuzzCassette)
FUZZ_MAIN(FuzzHTTP)
FUZZ_MAIN(FuzzUpstreamHTTP)
