#ifndef CSYSTEMD_SHIM_H
#define CSYSTEMD_SHIM_H

// The Swift side writes CODE_FILE/CODE_LINE/CODE_FUNC itself (from swift-log's call site);
// without this the C macros would add the shim's own location to every entry.
#define SD_JOURNAL_SUPPRESS_LOCATION 1

#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#endif
