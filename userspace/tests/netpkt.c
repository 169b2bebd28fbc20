/* Ethernet, ARP, IPv4 and ICMP echo frames (netpkt.h). */
#include <keel.h>
#include "netpkt.h"

void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

void put32(unsigned char *p, unsigned long v)
{
    put16(p, (unsigned)(v >> 16));
    put16(p + 2, (unsigned)v);
}

unsigned get16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

unsigned long get32(const unsigned char *p)
{
    return (unsigned long)get16(p) << 16 | get16(p + 2);
}

unsigned inet_sum(const unsigned char *p, unsigned long len)
{
    unsigned long sum = 0;

    for (unsigned long i = 0; i + 1 < len; i += 2)
        sum += get16(p + i);
    if (len & 1)
        sum += (unsigned)p[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (unsigned)~sum & 0xffff;
}

unsigned long eth_header(unsigned char *f, const unsigned char *dst, const unsigned char *src,
                                unsigned type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    put16(f + 12, type);
    return 14;
}

unsigned long arp_frame(unsigned char *f, unsigned op, const unsigned char *mac,
                               const unsigned char *target_mac, unsigned long target_ip)
{
    static const unsigned char bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    unsigned char *a = f + eth_header(f, op == 1 ? bcast : target_mac, mac, 0x0806);

    put16(a, 1);          /* Ethernet */
    put16(a + 2, 0x0800); /* IPv4 */
    a[4] = 6;
    a[5] = 4;
    put16(a + 6, op);
    memcpy(a + 8, mac, 6);
    put32(a + 14, GUEST_IP);
    memset(a + 18, 0, 6);
    if (op == 2)
        memcpy(a + 18, target_mac, 6);
    put32(a + 24, target_ip);
    return 14 + 28;
}

unsigned long ping_frame(unsigned char *f, const unsigned char *mac,
                                const unsigned char *host_mac, unsigned seq, unsigned payload)
{
    unsigned char *ip = f + eth_header(f, host_mac, mac, 0x0800), *icmp = ip + 20;

    memset(ip, 0, 20);
    ip[0] = 0x45;
    put16(ip + 2, 20 + 8 + payload);
    put16(ip + 4, seq);
    ip[8] = 64;
    ip[9] = 1; /* ICMP */
    put32(ip + 12, GUEST_IP);
    put32(ip + 16, HOST_IP);
    put16(ip + 10, inet_sum(ip, 20));
    icmp[0] = 8; /* echo request */
    icmp[1] = 0;
    put16(icmp + 2, 0);
    put16(icmp + 4, 0x6b6c); /* identifier "kl" */
    put16(icmp + 6, seq);
    for (unsigned i = 0; i < payload; i++)
        icmp[8 + i] = (unsigned char)(seq + i);
    put16(icmp + 2, inet_sum(icmp, 8 + payload));
    return 14 + 20 + 8 + payload;
}

int is_arp_reply(const unsigned char *f, unsigned long len, void *arg)
{
    if (len < 42 || get16(f + 12) != 0x0806 || get16(f + 20) != 2 || get32(f + 28) != HOST_IP)
        return 0;
    memcpy(arg, f + 22, 6);
    return 1;
}

int is_echo_reply(const unsigned char *f, unsigned long len, void *arg)
{
    const struct echo *e = arg;
    const unsigned char *ip = f + 14, *icmp = ip + 20;

    if (len != 14 + 20 + 8 + e->payload || get16(f + 12) != 0x0800 || ip[9] != 1 ||
        get32(ip + 12) != HOST_IP || icmp[0] != 0 || get16(icmp + 4) != 0x6b6c ||
        get16(icmp + 6) != e->seq || inet_sum(icmp, 8 + e->payload) != 0)
        return 0;
    for (unsigned i = 0; i < e->payload; i++) {
        if (icmp[8 + i] != (unsigned char)(e->seq + i))
            return 0;
    }
    return 1;
}
