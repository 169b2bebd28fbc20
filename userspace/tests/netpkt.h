/* Ethernet, ARP, IPv4 and ICMP echo frames for the in-guest net tests
 * (drvtests.c keel.test=net, crashtests.c the kill campaign): the guest is
 * 10.0.2.15, the host (the TAP's address, QEMU's user-mode gateway)
 * 10.0.2.2. */
#ifndef NETPKT_H
#define NETPKT_H

#define GUEST_IP 0x0a00020f /* 10.0.2.15 */
#define HOST_IP 0x0a000202  /* 10.0.2.2 */

struct echo {
    unsigned seq, payload;
};

void put16(unsigned char *p, unsigned v);
void put32(unsigned char *p, unsigned long v);
unsigned get16(const unsigned char *p);
unsigned long get32(const unsigned char *p);
unsigned inet_sum(const unsigned char *p, unsigned long len);
unsigned long eth_header(unsigned char *f, const unsigned char *dst, const unsigned char *src,
                         unsigned type);
/* An ARP request (op 1) or reply (op 2) in f; its length. */
unsigned long arp_frame(unsigned char *f, unsigned op, const unsigned char *mac,
                        const unsigned char *target_mac, unsigned long target_ip);
/* An ICMP echo request to the host, identifier "kl", sequence seq, payload
 * bytes seq + i; its length. */
unsigned long ping_frame(unsigned char *f, const unsigned char *mac,
                         const unsigned char *host_mac, unsigned seq, unsigned payload);
/* An ARP reply from the host: its MAC copied to arg (6 bytes). */
int is_arp_reply(const unsigned char *f, unsigned long len, void *arg);
/* The echo reply to arg (a struct echo), whole and correct. */
int is_echo_reply(const unsigned char *f, unsigned long len, void *arg);

#endif
