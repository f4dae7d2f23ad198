/* cfwd: the TUN ceiling for `userlb bench path`. A minimal NAT forwarder in C.
 *
 * What it does: creates a TUN (IFF_TUN | IFF_NO_PI), prints "ready", then per packet:
 * blocking read(), NAT, blocking write(). Client -> VIP:vport becomes client ->
 * server:rport (DNAT); server:rport -> client becomes VIP:vport -> client (SNAT), with
 * incremental IPv4 and TCP/UDP checksum updates (RFC 1624 eqn 3). With -v the TUN
 * carries a virtio_net_hdr and TSO/checksum offloads (TUNSETOFFLOAD): TCP super-packets
 * pass whole with their header unchanged; a NEEDS_CSUM packet's L4 field holds the
 * uncomplemented pseudo-header sum, so an address change is added without complement
 * and a port change leaves it alone (inet_proto_csum_replace4/2; spec/perf.md A1).
 * On SIGTERM/SIGINT it prints one JSON line of counters.
 *
 * What it does not do: keep a connection table. The server is a stateless hash, as
 * ip_vs_sh, of the client address ("s" ports: iperf3's control and data connections
 * meet one server) or of address and port ("c" ports: one pick per connection); it
 * costs nanoseconds next to the ~8 us of kernel work per TUN packet (spec/perf.md,
 * "The TUN ceiling"). No routes, rules or proxy ARP: the bench installs userlb's.
 *
 * Usage: cfwd [-v] TUN VIP SERVER[,SERVER...] VPORT:RPORT:{s|c} ...
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define MAX_SERVERS 64
#define MAX_PORTS 32
#define VNET_HDR_LEN 10                     /* struct virtio_net_hdr */
#define VNET_F_NEEDS_CSUM 1

struct portmap { uint16_t vport, rport; char mode; };

static uint32_t vip, servers[MAX_SERVERS];
static int nservers, nports, vnet;
static struct portmap ports[MAX_PORTS];
static volatile sig_atomic_t stopping;
static unsigned long long n_read, n_dnat, n_snat, n_drop, n_write_fail;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v & 0xffff); }

/* RFC 1624 eqn 3: HC' = ~(~HC + ~m + m'), for one 16-bit word m -> m'. */
static uint16_t csum16(uint16_t hc, uint16_t m, uint16_t m2)
{
    uint32_t s = (uint16_t)~hc + (uint16_t)~m + m2;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static uint16_t csum32(uint16_t hc, uint32_t m, uint32_t m2)
{
    return csum16(csum16(hc, m >> 16, m2 >> 16), m & 0xffff, m2 & 0xffff);
}

/* Rewrite one address (at addr_off) and one port (at port_off of the L4 header). */
static void rewrite(uint8_t *ip, int ihl, int proto, int addr_off, int port_off,
                    uint32_t addr, uint16_t port, int partial)
{
    uint8_t *l4 = ip + ihl;
    uint32_t old_addr = get32(ip + addr_off);
    uint16_t old_port = get16(l4 + port_off);
    put16(ip + 10, csum32(get16(ip + 10), old_addr, addr));
    int csum_off = proto == IPPROTO_TCP ? 16 : 6;
    uint16_t l4sum = get16(l4 + csum_off);
    if (partial) {                   /* P' = fold(P + ~old + new); ports not covered */
        put16(l4 + csum_off, (uint16_t)~csum32((uint16_t)~l4sum, old_addr, addr));
    } else if (proto == IPPROTO_TCP || l4sum != 0) { /* UDP checksum 0: none (RFC 768) */
        l4sum = csum16(csum32(l4sum, old_addr, addr), old_port, port);  /* pseudo-header */
        if (proto == IPPROTO_UDP && l4sum == 0)
            l4sum = 0xffff;
        put16(l4 + csum_off, l4sum);
    }
    put32(ip + addr_off, addr);
    put16(l4 + port_off, port);
}

/* 1: rewritten, 0: not ours (drop). */
static int nat(uint8_t *ip, ssize_t len, int partial)
{
    if (len < 20 || ip[0] >> 4 != 4)
        return 0;
    int ihl = (ip[0] & 0xf) * 4, proto = ip[9];
    if ((proto != IPPROTO_TCP && proto != IPPROTO_UDP) || len < ihl + 8
        || (get16(ip + 6) & 0x1fff) != 0 || (proto == IPPROTO_TCP && len < ihl + 20))
        return 0;
    uint32_t saddr = get32(ip + 12), daddr = get32(ip + 16);
    uint16_t sport = get16(ip + ihl), dport = get16(ip + ihl + 2);
    for (int i = 0; i < nports; i++) {
        if (daddr == vip && dport == ports[i].vport) {
            uint32_t h = ports[i].mode == 'c' ? saddr ^ (sport * 2654435761u) : saddr;
            rewrite(ip, ihl, proto, 16, 2, servers[h % (uint32_t)nservers], ports[i].rport,
                    partial);
            n_dnat++;
            return 1;
        }
    }
    for (int i = 0; i < nports; i++)
        for (int k = 0; k < nservers && sport == ports[i].rport; k++)
            if (saddr == servers[k]) {
                rewrite(ip, ihl, proto, 12, 0, vip, ports[i].vport, partial);
                n_snat++;
                return 1;
            }
    return 0;
}

static uint32_t parse_addr(const char *s)
{
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1)
        fprintf(stderr, "cfwd: bad address %s\n", s), exit(2);
    return ntohl(a.s_addr);
}

static char **parse_args(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        vnet = 1;
        argc--, argv++;
    }
    if (argc < 5) {
        fprintf(stderr, "usage: cfwd [-v] TUN VIP SERVER[,SERVER...] VPORT:RPORT:{s|c} ...\n");
        exit(2);
    }
    vip = parse_addr(argv[2]);
    for (char *tok = strtok(argv[3], ","); tok && nservers < MAX_SERVERS; tok = strtok(NULL, ","))
        servers[nservers++] = parse_addr(tok);
    for (int i = 4; i < argc && nports < MAX_PORTS; i++) {
        unsigned v, r;
        char mode;
        if (sscanf(argv[i], "%u:%u:%c", &v, &r, &mode) != 3 || (mode != 's' && mode != 'c')) {
            fprintf(stderr, "cfwd: bad port map %s\n", argv[i]);
            exit(2);
        }
        ports[nports++] = (struct portmap){(uint16_t)v, (uint16_t)r, mode};
    }
    return argv;
}

static int open_tun(const char *name)
{
    int fd = open("/dev/net/tun", O_RDWR);
    struct ifreq ifr = {0};
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) {
        perror("cfwd: TUNSETIFF");
        exit(1);
    }
    if (vnet && ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) {
        perror("cfwd: TUNSETOFFLOAD");
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv)
{
    argv = parse_args(argc, argv);
    int fd = open_tun(argv[1]);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;          /* no SA_RESTART: a blocked read() returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    printf("ready\n");
    fflush(stdout);
    static uint8_t buf[VNET_HDR_LEN + 65536];
    int hdr = vnet ? VNET_HDR_LEN : 0;
    while (!stopping) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return perror("cfwd: read"), 1;
        n_read++;
        if (n < hdr || !nat(buf + hdr, n - hdr, vnet && (buf[0] & VNET_F_NEEDS_CSUM))) {
            n_drop++;
            continue;
        }
        if (write(fd, buf, (size_t)n) != n)
            n_write_fail++;
    }
    printf("{\"read\": %llu, \"dnat\": %llu, \"snat\": %llu, \"dropped\": %llu, "
           "\"write_failed\": %llu}\n", n_read, n_dnat, n_snat, n_drop, n_write_fail);
    return 0;
}
