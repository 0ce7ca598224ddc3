#include "firewall/nftables.hpp"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <netinet/in.h>
#include <poll.h>

#include <net/if.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/netlink.h>

#include <cerrno>
#include <functional>
#include <map>
#include <cstring>
#include <ctime>
#include <memory>

#include "common/error.hpp"

namespace cairn::firewall {

namespace {

// One owner per libnftnl/libmnl handle.
template <auto Free>
struct Deleter {
    template <typename T>
    void operator()(T* p) const { Free(p); }
};
using TablePtr = std::unique_ptr<nftnl_table, Deleter<nftnl_table_free>>;
using ChainPtr = std::unique_ptr<nftnl_chain, Deleter<nftnl_chain_free>>;
using SetPtr = std::unique_ptr<nftnl_set, Deleter<nftnl_set_free>>;
using SetElemPtr = std::unique_ptr<nftnl_set_elem, Deleter<nftnl_set_elem_free>>;
using RulePtr = std::unique_ptr<nftnl_rule, Deleter<nftnl_rule_free>>;
using ExprPtr = std::unique_ptr<nftnl_expr, Deleter<nftnl_expr_free>>;
using BatchPtr = std::unique_ptr<nftnl_batch, Deleter<nftnl_batch_free>>;
using UdataPtr = std::unique_ptr<nftnl_udata_buf, Deleter<nftnl_udata_buf_free>>;
void close_socket(mnl_socket* s) { mnl_socket_close(s); }
using SocketPtr = std::unique_ptr<mnl_socket, Deleter<close_socket>>;
void free_expr_iter(nftnl_expr_iter* i) { nftnl_expr_iter_destroy(i); }
using ExprIterPtr = std::unique_ptr<nftnl_expr_iter, Deleter<free_expr_iter>>;
void free_elems_iter(nftnl_set_elems_iter* i) { nftnl_set_elems_iter_destroy(i); }
using ElemsIterPtr = std::unique_ptr<nftnl_set_elems_iter, Deleter<free_elems_iter>>;

constexpr uint32_t ct_invalid = 0x1, ct_established = 0x2, ct_related = 0x4, ct_new = 0x8;
constexpr uint32_t type_ipv4_addr = 7, type_ipv6_addr = 8;  // nft's datatype ids, so `nft list` prints addresses

struct Socket {
    SocketPtr nl;
    uint32_t portid = 0;
    Socket() : nl(mnl_socket_open(NETLINK_NETFILTER)) {
        if (!nl) fail_errno("opening a netfilter netlink socket");
        if (mnl_socket_bind(nl.get(), 0, MNL_SOCKET_AUTOPID) < 0) fail_errno("binding the netfilter netlink socket");
        portid = mnl_socket_get_portid(nl.get());
    }
};

// --- expressions -------------------------------------------------------------------------------

ExprPtr expr(const char* name) {
    ExprPtr e(nftnl_expr_alloc(name));
    if (!e) fail(std::string("nftables: cannot make a ") + name + " expression");
    return e;
}

class RuleBuilder {
public:
    RuleBuilder(const char* chain, const std::string& comment) : rule_(nftnl_rule_alloc()) {
        nftnl_rule_set_u32(rule_.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
        nftnl_rule_set_str(rule_.get(), NFTNL_RULE_TABLE, table_name);
        nftnl_rule_set_str(rule_.get(), NFTNL_RULE_CHAIN, chain);
        UdataPtr ud(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
        nftnl_udata_put_strz(ud.get(), NFTNL_UDATA_RULE_COMMENT, comment.c_str());
        nftnl_rule_set_data(rule_.get(), NFTNL_RULE_USERDATA, nftnl_udata_buf_data(ud.get()), nftnl_udata_buf_len(ud.get()));
    }
    RuleBuilder& add(ExprPtr e) {
        nftnl_rule_add_expr(rule_.get(), e.release());
        return *this;
    }
    RuleBuilder& meta(uint32_t key) {
        ExprPtr e = expr("meta");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_KEY, key);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_DREG, NFT_REG_1);
        return add(std::move(e));
    }
    RuleBuilder& cmp(uint32_t op, const void* data, uint32_t len) {
        ExprPtr e = expr("cmp");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_SREG, NFT_REG_1);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_OP, op);
        nftnl_expr_set(e.get(), NFTNL_EXPR_CMP_DATA, data, len);
        return add(std::move(e));
    }
    RuleBuilder& cmp_u8(uint8_t v) { return cmp(NFT_CMP_EQ, &v, 1); }
    RuleBuilder& nfproto(uint8_t family) { return meta(NFT_META_NFPROTO).cmp_u8(family); }
    RuleBuilder& l4proto(uint8_t proto) { return meta(NFT_META_L4PROTO).cmp_u8(proto); }
    RuleBuilder& payload(uint32_t base, uint32_t offset, uint32_t len) {
        ExprPtr e = expr("payload");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_BASE, base);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_OFFSET, offset);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_LEN, len);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
        return add(std::move(e));
    }
    // The source address of either family, into register 1 (after the nfproto check).
    RuleBuilder& saddr(bool v6) {
        nfproto(v6 ? NFPROTO_IPV6 : NFPROTO_IPV4);
        return v6 ? payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 16) : payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
    }
    RuleBuilder& tcp_dport(uint16_t port) {
        l4proto(IPPROTO_TCP);
        payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
        uint16_t be = htons(port);
        return cmp(NFT_CMP_EQ, &be, 2);
    }
    RuleBuilder& icmp_type(bool v6, uint8_t type) {
        nfproto(v6 ? NFPROTO_IPV6 : NFPROTO_IPV4);
        l4proto(v6 ? uint8_t{IPPROTO_ICMPV6} : uint8_t{IPPROTO_ICMP});
        payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1);
        return cmp_u8(type);
    }
    // ct state & mask != 0
    RuleBuilder& ct_state(uint32_t mask) {
        ExprPtr c = expr("ct");
        nftnl_expr_set_u32(c.get(), NFTNL_EXPR_CT_KEY, NFT_CT_STATE);
        nftnl_expr_set_u32(c.get(), NFTNL_EXPR_CT_DREG, NFT_REG_1);
        add(std::move(c));
        ExprPtr b = expr("bitwise");
        uint32_t zero = 0;
        nftnl_expr_set_u32(b.get(), NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
        nftnl_expr_set_u32(b.get(), NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
        nftnl_expr_set_u32(b.get(), NFTNL_EXPR_BITWISE_LEN, 4);
        nftnl_expr_set(b.get(), NFTNL_EXPR_BITWISE_MASK, &mask, 4);
        nftnl_expr_set(b.get(), NFTNL_EXPR_BITWISE_XOR, &zero, 4);
        add(std::move(b));
        return cmp(NFT_CMP_NEQ, &zero, 4);
    }
    RuleBuilder& iifname(const std::string& name) {
        char buffer[IFNAMSIZ] = {};
        std::strncpy(buffer, name.c_str(), IFNAMSIZ - 1);
        meta(NFT_META_IIFNAME);
        return cmp(NFT_CMP_EQ, buffer, IFNAMSIZ);
    }
    RuleBuilder& lookup(const char* set) {
        ExprPtr e = expr("lookup");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_LOOKUP_SET, set);
        return add(std::move(e));
    }
    RuleBuilder& limit(uint64_t rate, uint64_t unit_seconds, uint32_t burst, bool over) {
        return add(limit_expr(rate, unit_seconds, burst, over));
    }
    static ExprPtr limit_expr(uint64_t rate, uint64_t unit_seconds, uint32_t burst, bool over) {
        ExprPtr e = expr("limit");
        nftnl_expr_set_u64(e.get(), NFTNL_EXPR_LIMIT_RATE, rate);
        nftnl_expr_set_u64(e.get(), NFTNL_EXPR_LIMIT_UNIT, unit_seconds);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LIMIT_BURST, burst);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LIMIT_TYPE, NFT_LIMIT_PKTS);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LIMIT_FLAGS, over ? NFT_LIMIT_F_INV : 0);
        return e;
    }
    RuleBuilder& dynset(uint32_t op, const char* set, ExprPtr attached, uint64_t timeout_ms = 0) {
        ExprPtr e = expr("dynset");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_DYNSET_SREG_KEY, NFT_REG_1);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_DYNSET_OP, op);
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_DYNSET_SET_NAME, set);
        if (timeout_ms) nftnl_expr_set_u64(e.get(), NFTNL_EXPR_DYNSET_TIMEOUT, timeout_ms);
        if (attached) nftnl_expr_set(e.get(), NFTNL_EXPR_DYNSET_EXPR, attached.release(), 0);
        return add(std::move(e));
    }
    RuleBuilder& counter() { return add(expr("counter")); }
    RuleBuilder& verdict(int v) {
        ExprPtr e = expr("immediate");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(v));
        return add(std::move(e));
    }
    RulePtr done() { return std::move(rule_); }

private:
    RulePtr rule_;
};

// --- the batch ---------------------------------------------------------------------------------

class Batch {
public:
    Batch() : batch_(nftnl_batch_alloc(MNL_SOCKET_BUFFER_SIZE, MNL_SOCKET_BUFFER_SIZE)) {
        if (!batch_) fail("nftables: cannot allocate a batch");
        nftnl_batch_begin(static_cast<char*>(nftnl_batch_buffer(batch_.get())), seq_++);
        next();
    }
    nlmsghdr* header(uint16_t type, uint16_t flags, std::string what = {}) {
        last_seq_ = seq_;
        what_[seq_] = std::move(what);
        return nftnl_nlmsg_build_hdr(static_cast<char*>(nftnl_batch_buffer(batch_.get())), type, NFPROTO_INET, flags, seq_++);
    }
    void next() {
        if (nftnl_batch_update(batch_.get()) < 0) fail_errno("nftables: batch");
    }
    // Sends the batch and waits for the kernel's answer to its last message (NLM_F_ACK on it);
    // the first error anywhere in the batch aborts the whole transaction and is reported.
    void commit(Socket& s, const std::string& what) {
        nftnl_batch_end(static_cast<char*>(nftnl_batch_buffer(batch_.get())), seq_++);
        next();
        // All pages in one sendmsg(): the kernel takes a batch from one datagram.
        std::vector<iovec> iov = iovecs();
        sockaddr_nl kernel{};
        kernel.nl_family = AF_NETLINK;
        msghdr msg{};
        msg.msg_name = &kernel;
        msg.msg_namelen = sizeof kernel;
        msg.msg_iov = iov.data();
        msg.msg_iovlen = iov.size();
        if (::sendmsg(mnl_socket_get_fd(s.nl.get()), &msg, 0) < 0) fail_errno(what + ": sending to the kernel");
        receive_ack(s, last_seq_, what, &what_);
    }

    static void receive_ack(Socket& s, uint32_t seq, const std::string& what, const std::map<uint32_t, std::string>* names = nullptr) {
        std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
        for (;;) {
            pollfd p{mnl_socket_get_fd(s.nl.get()), POLLIN, 0};
            if (::poll(&p, 1, 5000) <= 0) fail(what + ": no answer from the kernel");
            ssize_t n = mnl_socket_recvfrom(s.nl.get(), buf.data(), buf.size());
            if (n < 0) fail_errno(what + ": reading the kernel's answer");
            int len = static_cast<int>(n);
            for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len)) {
                if (h->nlmsg_type != NLMSG_ERROR) continue;
                auto* err = static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(h));
                if (err->error != 0) {
                    errno = -err->error;
                    std::string object;
                    if (names)
                        if (auto it = names->find(err->msg.nlmsg_seq); it != names->end() && !it->second.empty()) object = " at " + it->second;
                    fail_errno(what + ": the kernel refused the ruleset" + object + " (nothing was changed)");
                }
                if (h->nlmsg_seq == seq) return;
            }
        }
    }

private:
    std::vector<iovec> iovecs() {
        std::vector<iovec> out(nftnl_batch_iovec_len(batch_.get()));
        nftnl_batch_iovec(batch_.get(), out.data(), static_cast<uint32_t>(out.size()));
        return out;
    }
    BatchPtr batch_;
    std::map<uint32_t, std::string> what_;  // sequence number -> the object it carries, for errors
    uint32_t seq_ = static_cast<uint32_t>(::time(nullptr));
    uint32_t last_seq_ = 0;
};

TablePtr make_table() {
    TablePtr t(nftnl_table_alloc());
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table_name);
    return t;
}

void add_table(Batch& b, uint16_t type) {
    TablePtr t = make_table();
    nftnl_table_nlmsg_build_payload(b.header(type, type == NFT_MSG_NEWTABLE ? NLM_F_CREATE : 0), t.get());
    b.next();
}

void add_chain(Batch& b, const char* name, uint32_t hook) {
    ChainPtr c(nftnl_chain_alloc());
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table_name);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, name);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, hook);
    nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, 0);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_DROP);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
    nftnl_chain_nlmsg_build_payload(b.header(NFT_MSG_NEWCHAIN, NLM_F_CREATE, std::string("chain ") + name), c.get());
    b.next();
}

void add_set(Batch& b, const char* name, bool v6, uint32_t id, uint64_t timeout_ms) {
    SetPtr s(nftnl_set_alloc());
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, table_name);
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name);
    nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, v6 ? type_ipv6_addr : type_ipv4_addr);
    nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, v6 ? 16 : 4);
    nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, NFT_SET_TIMEOUT | NFT_SET_EVAL);
    nftnl_set_set_u64(s.get(), NFTNL_SET_TIMEOUT, timeout_ms);
    nftnl_set_set_u32(s.get(), NFTNL_SET_DESC_SIZE, 65535);
    nftnl_set_set_u32(s.get(), NFTNL_SET_ID, id);
    UdataPtr ud(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
    nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_KEYBYTEORDER, 2 /* big endian */);
    nftnl_set_set_data(s.get(), NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud.get()), nftnl_udata_buf_len(ud.get()));
    nftnl_set_nlmsg_build_payload(b.header(NFT_MSG_NEWSET, NLM_F_CREATE, std::string("set ") + name), s.get());
    b.next();
}

std::string comment_of(const nftnl_rule* r) {
    if (!nftnl_rule_is_set(r, NFTNL_RULE_USERDATA)) return "";
    uint32_t len = 0;
    const void* data = nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &len);
    std::string out;
    nftnl_udata_parse(data, len, [](const nftnl_udata* attr, void* user) -> int {
        if (nftnl_udata_type(attr) == NFTNL_UDATA_RULE_COMMENT)
            *static_cast<std::string*>(user) = static_cast<const char*>(nftnl_udata_get(attr));
        return 0;
    }, &out);
    return out;
}

void add_rule(Batch& b, RulePtr r, bool last = false) {
    std::string what = "rule \"" + comment_of(r.get()) + "\"";
    nftnl_rule_nlmsg_build_payload(b.header(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | (last ? NLM_F_ACK : 0), what), r.get());
    b.next();
}

// Sends one dump request and hands every answer message to `each`. ENOENT (no table) gives none.
template <typename F>
bool dump(Socket& s, uint16_t type, const std::function<void(nlmsghdr*)>& build, F each) {
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    uint32_t seq = static_cast<uint32_t>(::time(nullptr));
    nlmsghdr* h = nftnl_nlmsg_build_hdr(buf.data(), type, NFPROTO_INET, NLM_F_DUMP | NLM_F_ACK, seq);
    build(h);
    if (mnl_socket_sendto(s.nl.get(), h, h->nlmsg_len) < 0) fail_errno("nftables: asking the kernel");
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(s.nl.get(), buf.data(), buf.size());
        if (n < 0) fail_errno("nftables: reading from the kernel");
        int len = static_cast<int>(n);
        for (auto* m = reinterpret_cast<nlmsghdr*>(buf.data()); mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
            if (m->nlmsg_type == NLMSG_DONE) return true;
            if (m->nlmsg_type == NLMSG_ERROR) {
                auto* err = static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(m));
                if (err->error == -ENOENT) return false;
                if (err->error != 0) {
                    errno = -err->error;
                    fail_errno("nftables: reading the ruleset");
                }
                continue;
            }
            each(m);
        }
    }
}

std::string address_text(const void* key, uint32_t len) {
    char text[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(len == 16 ? AF_INET6 : AF_INET, key, text, sizeof text);
    return text;
}

}  // namespace

void apply(const Policy& p) {
    Socket s;
    Batch b;
    // Create (if missing), delete, create: the replacement is one transaction.
    add_table(b, NFT_MSG_NEWTABLE);
    add_table(b, NFT_MSG_DELTABLE);
    add_table(b, NFT_MSG_NEWTABLE);
    add_chain(b, "input", NF_INET_LOCAL_IN);
    add_chain(b, "forward", NF_INET_FORWARD);
    add_set(b, "blocked4", false, 1, uint64_t(p.block_seconds) * 1000);
    add_set(b, "blocked6", true, 2, uint64_t(p.block_seconds) * 1000);
    add_set(b, "ssh_rate4", false, 3, uint64_t(p.window_seconds) * 1000);
    add_set(b, "ssh_rate6", true, 4, uint64_t(p.window_seconds) * 1000);

    add_rule(b, RuleBuilder("input", "drop invalid").ct_state(ct_invalid).counter().verdict(NF_DROP).done());
    add_rule(b, RuleBuilder("input", "accept established, related").ct_state(ct_established | ct_related).counter().verdict(NF_ACCEPT).done());
    add_rule(b, RuleBuilder("input", "accept loopback").iifname("lo").counter().verdict(NF_ACCEPT).done());
    struct Icmp {
        bool v6;
        uint8_t type;
        const char* name;
    };
    for (const Icmp& i : {Icmp{false, 3, "icmp destination-unreachable"}, Icmp{false, 11, "icmp time-exceeded"},
                          Icmp{false, 12, "icmp parameter-problem"}, Icmp{true, 1, "icmpv6 destination-unreachable"},
                          Icmp{true, 2, "icmpv6 packet-too-big"}, Icmp{true, 3, "icmpv6 time-exceeded"},
                          Icmp{true, 4, "icmpv6 parameter-problem"}, Icmp{true, 133, "icmpv6 nd-router-solicit"},
                          Icmp{true, 134, "icmpv6 nd-router-advert"}, Icmp{true, 135, "icmpv6 nd-neighbor-solicit"},
                          Icmp{true, 136, "icmpv6 nd-neighbor-advert"}})
        add_rule(b, RuleBuilder("input", std::string("accept ") + i.name).icmp_type(i.v6, i.type).counter().verdict(NF_ACCEPT).done());
    if (p.echo_per_second) {
        for (bool v6 : {false, true})
            add_rule(b, RuleBuilder("input", std::string("accept ") + (v6 ? "icmpv6" : "icmp") + " echo-request, rate-limited")
                            .icmp_type(v6, v6 ? 128 : 8).limit(p.echo_per_second, 1, p.echo_per_second, false).counter().verdict(NF_ACCEPT).done());
    }
    for (bool v6 : {false, true})
        add_rule(b, RuleBuilder("input", std::string("drop blocked sources (") + (v6 ? "IPv6" : "IPv4") + ")")
                        .saddr(v6).lookup(v6 ? "blocked6" : "blocked4").counter().verdict(NF_DROP).done());
    for (bool v6 : {false, true}) {
        RuleBuilder r("input", std::string("ssh brute force: block the source (") + (v6 ? "IPv6" : "IPv4") + ")");
        r.ct_state(ct_new).tcp_dport(p.ssh_port).saddr(v6);
        r.dynset(NFT_DYNSET_OP_UPDATE, v6 ? "ssh_rate6" : "ssh_rate4", RuleBuilder::limit_expr(1, p.window_seconds, p.max_new, true));
        r.saddr(v6).dynset(NFT_DYNSET_OP_ADD, v6 ? "blocked6" : "blocked4", nullptr, uint64_t(p.block_seconds) * 1000);
        add_rule(b, r.counter().verdict(NF_DROP).done());
    }
    add_rule(b, RuleBuilder("input", "accept ssh").tcp_dport(p.ssh_port).counter().verdict(NF_ACCEPT).done());
    for (uint16_t port : p.tcp)
        add_rule(b, RuleBuilder("input", "accept tcp " + std::to_string(port)).tcp_dport(port).counter().verdict(NF_ACCEPT).done());
    add_rule(b, RuleBuilder("input", "dropped by policy").counter().done());
    add_rule(b, RuleBuilder("forward", "dropped by policy").counter().done(), true);
    b.commit(s, "cairn-firewall apply");
}

namespace {
bool table_exists(Socket& s) {
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    uint32_t seq = static_cast<uint32_t>(::time(nullptr));
    nlmsghdr* h = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETTABLE, NFPROTO_INET, NLM_F_ACK, seq);
    TablePtr t = make_table();
    nftnl_table_nlmsg_build_payload(h, t.get());
    if (mnl_socket_sendto(s.nl.get(), h, h->nlmsg_len) < 0) fail_errno("nftables: asking the kernel");
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(s.nl.get(), buf.data(), buf.size());
        if (n < 0) fail_errno("nftables: reading from the kernel");
        int len = static_cast<int>(n);
        for (auto* m = reinterpret_cast<nlmsghdr*>(buf.data()); mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
            if (m->nlmsg_type != NLMSG_ERROR) continue;
            auto* err = static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(m));
            if (err->error == -ENOENT) return false;
            if (err->error != 0) {
                errno = -err->error;
                fail_errno("nftables: looking for table inet cairn");
            }
            return true;
        }
    }
}
}  // namespace

State read_state() {
    Socket s;
    State st;
    st.present = table_exists(s);
    if (!st.present) return st;
    dump(s, NFT_MSG_GETRULE, [](nlmsghdr* h) {
        RulePtr r(nftnl_rule_alloc());
        nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table_name);
        nftnl_rule_nlmsg_build_payload(h, r.get());
    }, [&](nlmsghdr* m) {
        RulePtr r(nftnl_rule_alloc());
        if (nftnl_rule_nlmsg_parse(m, r.get()) < 0) return;
        if (std::string(nftnl_rule_get_str(r.get(), NFTNL_RULE_TABLE)) != table_name) return;
        RuleState rs;
        rs.chain = nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN);
        rs.handle = nftnl_rule_get_u64(r.get(), NFTNL_RULE_HANDLE);
        rs.comment = comment_of(r.get());
        ExprIterPtr it(nftnl_expr_iter_create(r.get()));
        while (nftnl_expr* e = nftnl_expr_iter_next(it.get())) {
            if (std::string(nftnl_expr_get_str(e, NFTNL_EXPR_NAME)) == "counter") {
                rs.packets = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
                rs.bytes = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
            }
        }
        st.rules.push_back(rs);
    });
    for (const char* set : {"blocked4", "blocked6"}) {
        dump(s, NFT_MSG_GETSETELEM, [&](nlmsghdr* h) {
            SetPtr q(nftnl_set_alloc());
            nftnl_set_set_str(q.get(), NFTNL_SET_TABLE, table_name);
            nftnl_set_set_str(q.get(), NFTNL_SET_NAME, set);
            nftnl_set_elems_nlmsg_build_payload(h, q.get());
        }, [&](nlmsghdr* m) {
            SetPtr got(nftnl_set_alloc());
            if (nftnl_set_elems_nlmsg_parse(m, got.get()) < 0) return;
            ElemsIterPtr it(nftnl_set_elems_iter_create(got.get()));
            while (nftnl_set_elem* e = nftnl_set_elems_iter_next(it.get())) {
                uint32_t len = 0;
                const void* key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len);
                Blocked bl;
                bl.address = address_text(key, len);
                if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_EXPIRATION)) bl.expires_ms = nftnl_set_elem_get_u64(e, NFTNL_SET_ELEM_EXPIRATION);
                st.blocked.push_back(bl);
            }
        });
    }
    return st;
}

namespace {
// Deletes one element from a set in its own batch; false when the kernel says it is not there.
bool delete_element(const char* set_name, const unsigned char* key, uint32_t len) {
    Socket s;
    Batch b;
    SetPtr set(nftnl_set_alloc());
    nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, table_name);
    nftnl_set_set_str(set.get(), NFTNL_SET_NAME, set_name);
    nftnl_set_elem* e = nftnl_set_elem_alloc();
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, len);
    nftnl_set_elem_add(set.get(), e);  // the set owns it now
    nftnl_set_elems_nlmsg_build_payload(b.header(NFT_MSG_DELSETELEM, NLM_F_ACK, std::string("set ") + set_name), set.get());
    b.next();
    try {
        b.commit(s, "cairn-firewall unblock");
    } catch (const Error&) {
        if (errno == ENOENT) return false;
        throw;
    }
    return true;
}
}  // namespace

bool unblock(const std::string& address) {
    unsigned char key[16];
    bool v6 = address.find(':') != std::string::npos;
    if (::inet_pton(v6 ? AF_INET6 : AF_INET, address.c_str(), key) != 1) fail("'" + address + "' is not an IPv4 or IPv6 address");
    if (!read_state().present) fail("the firewall is not loaded (table inet cairn does not exist)");
    const uint32_t len = v6 ? 16 : 4;
    bool was_blocked = delete_element(v6 ? "blocked6" : "blocked4", key, len);
    // A fresh start for its rate too, or its next connection would block it again at once.
    delete_element(v6 ? "ssh_rate6" : "ssh_rate4", key, len);
    return was_blocked;
}

}  // namespace cairn::firewall
