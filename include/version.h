/* The version uffd-manager and uffd-inject report (-V). */
#ifndef UFFD_VERSION_H
#define UFFD_VERSION_H
#ifdef UFFD_ALT_BUILD
/* The same source built again, for the restart tests: a different build takes over. */
#define UFFD_VERSION "0.1.0+alt"
#else
#define UFFD_VERSION "0.1.0"
#endif
#endif
