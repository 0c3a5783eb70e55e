/* The version uffd-manager and uffd-inject report (-V). */
#ifndef UFFD_VERSION_H
#define UFFD_VERSION_H
#define UFFD_VERSION "0.1.0"
#endif
