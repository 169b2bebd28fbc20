/* The per-type operations table (keel/objtype.h), generated from the
 * [types] section of kernel/calls.tbl.  This file only instantiates it:
 * the hooks live in each type's own file. */
#define OBJTYPE_TABLE /* before any header: keel/types_gen.h is included once */
#include <keel/types_gen.h>
