/* Finding a file in a cpio "newc" archive (the initrd).  The archive is
 * loader input: every field is bounds-checked. */
#include <keel/cpio.h>
#include <keel/string.h>

#define NEWC_HEADER 110

static bool hex_field(const u8 *p, u64 *out)
{
    u64 v = 0;

    for (int i = 0; i < 8; i++) {
        u8 c = p[i];
        u32 d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return false;
        v = v << 4 | d;
    }
    *out = v;
    return true;
}

bool cpio_find(const u8 *base, u64 size, const char *name, const u8 **data, u64 *len)
{
    u64 off = 0;

    while (off + NEWC_HEADER <= size) {
        const u8 *h = base + off;
        u64 filesize, namesize;
        if (memcmp(h, "070701", 6) && memcmp(h, "070702", 6))
            return false;
        if (!hex_field(h + 54, &filesize) || !hex_field(h + 94, &namesize))
            return false;
        u64 name_off = off + NEWC_HEADER;
        if (namesize == 0 || namesize > size - name_off)
            return false;
        u64 data_off = ALIGN_UP(name_off + namesize, 4);
        if (data_off > size || filesize > size - data_off)
            return false;
        const char *n = (const char *)base + name_off;
        if (n[namesize - 1] != 0)
            return false;
        if (!strcmp(n, "TRAILER!!!"))
            return false;
        if (!strcmp(n, name) || (n[0] == '.' && n[1] == '/' && !strcmp(n + 2, name))) {
            *data = base + data_off;
            *len = filesize;
            return true;
        }
        off = ALIGN_UP(data_off + filesize, 4);
    }
    return false;
}
