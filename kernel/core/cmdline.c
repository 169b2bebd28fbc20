#include <keel/cmdline.h>
#include <keel/string.h>

bool cmdline_get(const char *cmdline, const char *key, char *val, size_t size)
{
    size_t klen = strlen(key);
    const char *p = cmdline;

    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *word = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        size_t wlen = (size_t)(p - word);
        if (wlen > klen && word[klen] == '=' && strncmp(word, key, klen) == 0) {
            size_t n = wlen - klen - 1;
            if (size) {
                n = MIN(n, size - 1);
                memcpy(val, word + klen + 1, n);
                val[n] = 0;
            }
            return true;
        }
    }
    return false;
}
