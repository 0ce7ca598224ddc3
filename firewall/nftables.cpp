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

#include <algorithm>
#include <cerrno>
#include <functional>
#include <optional>
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
constexpr unsigned char prefix64[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
constexpr size_t elements_per_message = 64;  // carried blocklist entries: keeps each message within a batch page

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
    // register 1 = register 1 & mask (len bytes)
    RuleBuilder& mask(const void* mask, uint32_t len) {
        ExprPtr b = expr("bitwise");
        const unsigned char zero[16] = {};
        nftnl_expr_set_u32(b.get(), NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
        nftnl_expr_set_u32(b.get(), NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
        nftnl_expr_set_u32(b.get(), NFTNL_EXPR_BITWISE_LEN, len);
        nftnl_expr_set(b.get(), NFTNL_EXPR_BITWISE_MASK, mask, len);
        nftnl_expr_set(b.get(), NFTNL_EXPR_BITWISE_XOR, zero, len);
        return add(std::move(b));
    }
    // What brute-force blocking counts and blocks, into register 1: an IPv4 source address, or
    // the /64 of an IPv6 source (ip6 saddr & ffff:ffff:ffff:ffff::), so that a client rotating
    // addresses inside its /64 is one source.
    RuleBuilder& source_key(bool v6) {
        saddr(v6);
        return v6 ? mask(prefix64, 16) : *this;
    }
    // ip6 saddr fe80::/10 (a link-local source), after the nfproto check.
    RuleBuilder& link_local_source() {
        payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 16);
        const unsigned char ten[16] = {0xff, 0xc0}, fe80[16] = {0xfe, 0x80};
        mask(ten, 16);
        return cmp(NFT_CMP_EQ, fe80, 16);
    }
    // ip6 hoplimit == value, after the nfproto check.
    RuleBuilder& hop_limit(uint8_t value) {
        payload(NFT_PAYLOAD_NETWORK_HEADER, 7, 1);
        return cmp_u8(value);
    }
    // ct state & mask != 0
    RuleBuilder& ct_state(uint32_t bits) {
        ExprPtr c = expr("ct");
        nftnl_expr_set_u32(c.get(), NFTNL_EXPR_CT_KEY, NFT_CT_STATE);
        nftnl_expr_set_u32(c.get(), NFTNL_EXPR_CT_DREG, NFT_REG_1);
        add(std::move(c));
        mask(&bits, 4);
        uint32_t zero = 0;
        return cmp(NFT_CMP_NEQ, &zero, 4);
    }
    RuleBuilder& iifname(const std::string& name) {
        char buffer[IFNAMSIZ] = {};
        std::strncpy(buffer, name.c_str(), IFNAMSIZ - 1);
        meta(NFT_META_IIFNAME);
        return cmp(NFT_CMP_EQ, buffer, IFNAMSIZ);
    }
    // Register 1 is in the set (or, inverted, is not).
    RuleBuilder& lookup(const char* set, bool inverted = false) {
        ExprPtr e = expr("lookup");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_LOOKUP_SET, set);
        if (inverted) nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
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
    RuleBuilder& jump(const char* chain) {
        ExprPtr e = expr("immediate");
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(NFT_JUMP));
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_IMM_CHAIN, chain);
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
        size_t total = 0;
        for (const iovec& v : iov) total += v.iov_len;
        if (total > 128 * 1024) {  // many carried blocklist entries: the default socket buffer is too small
            int size = static_cast<int>(std::min<size_t>(total * 2, 64u << 20));
            ::setsockopt(mnl_socket_get_fd(s.nl.get()), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
        }
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

// A base chain (hook given: filter, priority 0, policy drop) or a regular chain (no hook).
void add_chain(Batch& b, const char* name, std::optional<uint32_t> hook) {
    ChainPtr c(nftnl_chain_alloc());
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table_name);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, name);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    if (hook) {
        nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, *hook);
        nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, 0);
        nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_DROP);
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
    }
    nftnl_chain_nlmsg_build_payload(b.header(NFT_MSG_NEWCHAIN, NLM_F_CREATE, std::string("chain ") + name), c.get());
    b.next();
}

// Removes every rule of a chain, then (second pass, once no rule refers to anything) the chain.
void flush_chain(Batch& b, const std::string& name) {
    RulePtr r(nftnl_rule_alloc());
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table_name);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, name.c_str());
    nftnl_rule_nlmsg_build_payload(b.header(NFT_MSG_DELRULE, 0, "flushing chain " + name), r.get());
    b.next();
}
void delete_chain(Batch& b, const std::string& name) {
    ChainPtr c(nftnl_chain_alloc());
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table_name);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, name.c_str());
    nftnl_chain_nlmsg_build_payload(b.header(NFT_MSG_DELCHAIN, 0, "deleting chain " + name), c.get());
    b.next();
}

// One of the table's sets as Cairn wants it. The comment spells out what the set counts, with
// the policy values its elements carry, so that a set whose meaning changed is told apart from
// one that can be kept.
struct SetDef {
    const char* name;
    bool v6;
    bool blocklist;
    uint64_t timeout_ms;
    uint32_t size;
    std::string comment;
};

std::vector<SetDef> set_defs(const Policy& p) {
    const uint64_t block = uint64_t(p.block_seconds) * 1000, window = uint64_t(p.window_seconds) * 1000;
    const std::string rate = ": more than " + std::to_string(p.max_new) + " new ssh connections in " + std::to_string(p.window_seconds) + " s blocks it";
    return {{"blocked4", false, true, block, p.max_sources, "blocked IPv4 sources"},
            {"blocked6", true, true, block, p.max_sources, "blocked IPv6 sources, by /64"},
            {"ssh_rate4", false, false, window, p.max_sources, "ssh rate per IPv4 source" + rate},
            {"ssh_rate6", true, false, window, p.max_sources, "ssh rate per IPv6 /64" + rate}};
}

constexpr uint32_t set_flags = NFT_SET_TIMEOUT | NFT_SET_EVAL;

void add_set(Batch& b, const SetDef& d, uint32_t id) {
    SetPtr s(nftnl_set_alloc());
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, table_name);
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, d.name);
    nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, d.v6 ? type_ipv6_addr : type_ipv4_addr);
    nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, d.v6 ? 16 : 4);
    nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, set_flags);
    nftnl_set_set_u64(s.get(), NFTNL_SET_TIMEOUT, d.timeout_ms);
    nftnl_set_set_u32(s.get(), NFTNL_SET_DESC_SIZE, d.size);
    nftnl_set_set_u32(s.get(), NFTNL_SET_ID, id);  // the kernel wants one for every new set
    UdataPtr ud(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
    nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_KEYBYTEORDER, 2 /* big endian */);
    nftnl_udata_put_strz(ud.get(), NFTNL_UDATA_SET_COMMENT, d.comment.c_str());
    nftnl_set_set_data(s.get(), NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud.get()), nftnl_udata_buf_len(ud.get()));
    nftnl_set_nlmsg_build_payload(b.header(NFT_MSG_NEWSET, NLM_F_CREATE, std::string("set ") + d.name), s.get());
    b.next();
}

void delete_set(Batch& b, const std::string& name) {
    SetPtr s(nftnl_set_alloc());
    nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, table_name);
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name.c_str());
    nftnl_set_nlmsg_build_payload(b.header(NFT_MSG_DELSET, 0, "deleting set " + name), s.get());
    b.next();
}

struct Element {
    std::vector<unsigned char> key;
    uint64_t ms = 0;  // time left (read) or timeout (written)
};

// Adds elements with their own timeouts, a bounded number per message.
void add_elements(Batch& b, const char* set_name, const std::vector<Element>& elements) {
    for (size_t first = 0; first < elements.size(); first += elements_per_message) {
        SetPtr set(nftnl_set_alloc());
        nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
        nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, table_name);
        nftnl_set_set_str(set.get(), NFTNL_SET_NAME, set_name);
        for (size_t i = first; i < std::min(elements.size(), first + elements_per_message); ++i) {
            nftnl_set_elem* e = nftnl_set_elem_alloc();
            if (!e) fail("nftables: cannot make a set element");
            nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, elements[i].key.data(), static_cast<uint32_t>(elements[i].key.size()));
            nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, elements[i].ms);
            nftnl_set_elem_add(set.get(), e);  // the set owns it now
        }
        nftnl_set_elems_nlmsg_build_payload(b.header(NFT_MSG_NEWSETELEM, NLM_F_CREATE, std::string("elements of set ") + set_name), set.get());
        b.next();
    }
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

std::string set_comment(const nftnl_set* set) {
    if (!nftnl_set_is_set(set, NFTNL_SET_USERDATA)) return "";
    uint32_t len = 0;
    const void* data = nftnl_set_get_data(set, NFTNL_SET_USERDATA, &len);
    std::string out;
    nftnl_udata_parse(data, len, [](const nftnl_udata* attr, void* user) -> int {
        if (nftnl_udata_type(attr) == NFTNL_UDATA_SET_COMMENT)
            *static_cast<std::string*>(user) = std::string(static_cast<const char*>(nftnl_udata_get(attr)), strnlen(static_cast<const char*>(nftnl_udata_get(attr)), nftnl_udata_len(attr)));
        return 0;
    }, &out);
    return out;
}

// The elements of one of the table's sets with the time each has left.
std::vector<Element> read_elements(Socket& s, const std::string& set_name) {
    std::vector<Element> out;
    dump(s, NFT_MSG_GETSETELEM, [&](nlmsghdr* h) {
        SetPtr q(nftnl_set_alloc());
        nftnl_set_set_str(q.get(), NFTNL_SET_TABLE, table_name);
        nftnl_set_set_str(q.get(), NFTNL_SET_NAME, set_name.c_str());
        nftnl_set_elems_nlmsg_build_payload(h, q.get());
    }, [&](nlmsghdr* m) {
        SetPtr got(nftnl_set_alloc());
        if (nftnl_set_elems_nlmsg_parse(m, got.get()) < 0) return;
        ElemsIterPtr it(nftnl_set_elems_iter_create(got.get()));
        while (nftnl_set_elem* e = nftnl_set_elems_iter_next(it.get())) {
            uint32_t len = 0;
            const auto* key = static_cast<const unsigned char*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len));
            Element el;
            el.key.assign(key, key + len);
            if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_EXPIRATION)) el.ms = nftnl_set_elem_get_u64(e, NFTNL_SET_ELEM_EXPIRATION);
            out.push_back(std::move(el));
        }
    });
    return out;
}

// What the kernel holds of table inet cairn now.
struct Existing {
    bool table = false;
    std::vector<std::string> chains;
    struct Set {
        uint32_t key_type = 0, key_len = 0, flags = 0, size = 0;
        uint64_t timeout_ms = 0;
        std::string comment;
    };
    std::map<std::string, Set> sets;
};

bool table_exists(Socket& s);

Existing read_existing(Socket& s) {
    Existing ex;
    ex.table = table_exists(s);
    if (!ex.table) return ex;
    dump(s, NFT_MSG_GETCHAIN, [](nlmsghdr* h) {
        ChainPtr c(nftnl_chain_alloc());
        nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table_name);
        nftnl_chain_nlmsg_build_payload(h, c.get());
    }, [&](nlmsghdr* m) {
        ChainPtr c(nftnl_chain_alloc());
        if (nftnl_chain_nlmsg_parse(m, c.get()) < 0) return;
        if (std::string(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE)) == table_name)
            ex.chains.push_back(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_NAME));
    });
    dump(s, NFT_MSG_GETSET, [](nlmsghdr* h) {
        SetPtr q(nftnl_set_alloc());
        nftnl_set_set_str(q.get(), NFTNL_SET_TABLE, table_name);
        nftnl_set_nlmsg_build_payload(h, q.get());
    }, [&](nlmsghdr* m) {
        SetPtr got(nftnl_set_alloc());
        if (nftnl_set_nlmsg_parse(m, got.get()) < 0) return;
        if (std::string(nftnl_set_get_str(got.get(), NFTNL_SET_TABLE)) != table_name) return;
        Existing::Set es;
        auto u32 = [&](uint16_t attr) { return nftnl_set_is_set(got.get(), attr) ? nftnl_set_get_u32(got.get(), attr) : 0u; };
        es.key_type = u32(NFTNL_SET_KEY_TYPE);
        es.key_len = u32(NFTNL_SET_KEY_LEN);
        es.flags = u32(NFTNL_SET_FLAGS);
        es.size = u32(NFTNL_SET_DESC_SIZE);
        if (nftnl_set_is_set(got.get(), NFTNL_SET_TIMEOUT)) es.timeout_ms = nftnl_set_get_u64(got.get(), NFTNL_SET_TIMEOUT);
        es.comment = set_comment(got.get());
        ex.sets[nftnl_set_get_str(got.get(), NFTNL_SET_NAME)] = es;
    });
    return ex;
}

bool same_set(const Existing::Set& e, const SetDef& d) {
    return e.key_type == (d.v6 ? type_ipv6_addr : type_ipv4_addr) && e.key_len == (d.v6 ? 16u : 4u) && (e.flags & set_flags) == set_flags &&
           e.timeout_ms == d.timeout_ms && e.size == d.size && e.comment == d.comment;
}

// The blocked entries of a set about to be replaced, as they go into the new one: IPv6 keys
// reduced to their /64 (a table from before the /64 keys), time left capped at the new block time.
std::vector<Element> carry_over(std::vector<Element> old, const SetDef& d) {
    std::map<std::vector<unsigned char>, uint64_t> merged;
    for (Element& e : old) {
        if (e.key.size() != (d.v6 ? 16u : 4u) || e.ms == 0) continue;
        if (d.v6)
            for (size_t i = 0; i < 16; ++i) e.key[i] &= prefix64[i];
        uint64_t& ms = merged[e.key];
        ms = std::max(ms, std::min(e.ms, d.timeout_ms));
    }
    std::vector<Element> out;
    for (auto& [key, ms] : merged) out.push_back({key, ms});
    return out;
}

}  // namespace

Applied apply(const Policy& p) {
    Socket s;
    const Existing ex = read_existing(s);
    const std::vector<SetDef> defs = set_defs(p);
    Applied result;
    Batch b;
    // Create the table if it is missing; empty every chain of it, then delete the chains (the
    // flush first, so no rule refers to another chain or to a set any more).
    add_table(b, NFT_MSG_NEWTABLE);
    for (const std::string& chain : ex.chains) flush_chain(b, chain);
    for (const std::string& chain : ex.chains) delete_chain(b, chain);
    // Sets: keep the ones whose definition is unchanged, with their elements (blocked sources
    // with their time left, rate counters with their tokens); replace the others, carrying the
    // blocked sources over; delete sets Cairn no longer has.
    std::map<std::string, std::vector<Element>> carried;
    std::map<std::string, bool> kept;
    for (const auto& [name, es] : ex.sets) {
        const std::string& set_name = name;  // clang 14 cannot capture a structured binding
        auto d = std::find_if(defs.begin(), defs.end(), [&](const SetDef& x) { return set_name == x.name; });
        if (d != defs.end() && same_set(es, *d)) {
            kept[name] = true;
            continue;
        }
        if (d != defs.end() && d->blocklist) carried[name] = carry_over(read_elements(s, name), *d);
        delete_set(b, name);
    }
    uint32_t set_id = 0;
    for (const SetDef& d : defs) {
        ++set_id;
        if (kept[d.name]) {
            if (d.blocklist) result.blocked_kept += read_elements(s, d.name).size();
            else result.rates_kept = true;
            continue;
        }
        add_set(b, d, set_id);
        if (auto it = carried.find(d.name); it != carried.end()) {
            add_elements(b, d.name, it->second);
            result.blocked_kept += it->second.size();
        }
    }
    add_chain(b, "input", NF_INET_LOCAL_IN);
    add_chain(b, "forward", NF_INET_FORWARD);
    add_chain(b, "ssh_over", std::nullopt);

    add_rule(b, RuleBuilder("input", "drop invalid").ct_state(ct_invalid).counter().verdict(NF_DROP).done());
    // Echo requests before the established/related accept: the limit holds per packet, also
    // for the second and later requests of one flow (one ICMP id, as ping -f sends).
    for (bool v6 : {false, true}) {
        const std::string name = std::string(v6 ? "icmpv6" : "icmp") + " echo-request";
        if (p.echo_per_second)
            add_rule(b, RuleBuilder("input", "accept " + name + ", rate-limited")
                            .icmp_type(v6, v6 ? 128 : 8).limit(p.echo_per_second, 1, p.echo_per_second, false).counter().verdict(NF_ACCEPT).done());
        add_rule(b, RuleBuilder("input", "drop " + name + (p.echo_per_second ? " over the rate" : ""))
                        .icmp_type(v6, v6 ? 128 : 8).counter().verdict(NF_DROP).done());
    }
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
    // RFC 4890 4.4.1: MLD must not be dropped. It is link-local by definition (RFC 2710, 3810):
    // a link-local source and hop limit 1; anything else with these types is not MLD.
    for (const Icmp& i : {Icmp{true, 130, "mld-listener-query"}, Icmp{true, 131, "mld-listener-report"},
                          Icmp{true, 132, "mld-listener-done"}, Icmp{true, 143, "mld2-listener-report"}})
        add_rule(b, RuleBuilder("input", std::string("accept icmpv6 ") + i.name + " (mld) from link-local, hop limit 1")
                        .icmp_type(true, i.type).link_local_source().hop_limit(1).counter().verdict(NF_ACCEPT).done());
    for (bool v6 : {false, true})
        add_rule(b, RuleBuilder("input", std::string("drop blocked sources (") + (v6 ? "IPv6 /64" : "IPv4") + ")")
                        .source_key(v6).lookup(v6 ? "blocked6" : "blocked4").counter().verdict(NF_DROP).done());
    for (bool v6 : {false, true}) {
        // Over the rate: to ssh_over, which blocks the source and drops the packet (the drop does
        // not depend on the block set having room).
        RuleBuilder r("input", std::string("ssh brute force: over the rate (") + (v6 ? "IPv6 /64" : "IPv4") + ")");
        r.ct_state(ct_new).tcp_dport(p.ssh_port).source_key(v6);
        r.dynset(NFT_DYNSET_OP_UPDATE, v6 ? "ssh_rate6" : "ssh_rate4", RuleBuilder::limit_expr(1, p.window_seconds, p.max_new, true));
        add_rule(b, r.counter().jump("ssh_over").done());
        // A source the rate set could not take (it is full) was not counted: drop, never let
        // it through uncounted.
        add_rule(b, RuleBuilder("input", std::string("ssh brute force: drop, rate set full (") + (v6 ? "IPv6" : "IPv4") + ")")
                        .ct_state(ct_new).tcp_dport(p.ssh_port).source_key(v6).lookup(v6 ? "ssh_rate6" : "ssh_rate4", true)
                        .counter().verdict(NF_DROP).done());
    }
    for (bool v6 : {false, true})
        add_rule(b, RuleBuilder("ssh_over", std::string("ssh brute force: block the source (") + (v6 ? "IPv6 /64" : "IPv4") + ")")
                        .source_key(v6).dynset(NFT_DYNSET_OP_ADD, v6 ? "blocked6" : "blocked4", nullptr, uint64_t(p.block_seconds) * 1000)
                        .counter().done());
    add_rule(b, RuleBuilder("ssh_over", "ssh brute force: drop").counter().verdict(NF_DROP).done());
    add_rule(b, RuleBuilder("input", "accept ssh").tcp_dport(p.ssh_port).counter().verdict(NF_ACCEPT).done());
    for (uint16_t port : p.tcp)
        add_rule(b, RuleBuilder("input", "accept tcp " + std::to_string(port)).tcp_dport(port).counter().verdict(NF_ACCEPT).done());
    add_rule(b, RuleBuilder("input", "dropped by policy").counter().done());
    add_rule(b, RuleBuilder("forward", "dropped by policy").counter().done(), true);
    b.commit(s, "cairn-firewall apply");
    return result;
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
    for (const char* set : {"blocked4", "blocked6"})
        for (const Element& e : read_elements(s, set)) {
            Blocked bl;
            bl.address = address_text(e.key.data(), static_cast<uint32_t>(e.key.size())) + (e.key.size() == 16 ? "/64" : "");
            bl.expires_ms = e.ms;
            st.blocked.push_back(bl);
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
    const bool v6 = address.find(':') != std::string::npos;
    // IPv6 is blocked by /64: any address of it, or the prefix written as ADDRESS/64.
    std::string text = address;
    if (v6 && text.size() > 3 && text.compare(text.size() - 3, 3, "/64") == 0) text.resize(text.size() - 3);
    if (::inet_pton(v6 ? AF_INET6 : AF_INET, text.c_str(), key) != 1) fail("'" + address + "' is not an IPv4 or IPv6 address (or an IPv6 /64)");
    if (v6)
        for (size_t i = 0; i < 16; ++i) key[i] &= prefix64[i];
    if (!read_state().present) fail("the firewall is not loaded (table inet cairn does not exist)");
    const uint32_t len = v6 ? 16 : 4;
    bool was_blocked = delete_element(v6 ? "blocked6" : "blocked4", key, len);
    // A fresh start for its rate too, or its next connection would block it again at once.
    delete_element(v6 ? "ssh_rate6" : "ssh_rate4", key, len);
    return was_blocked;
}

}  // namespace cairn::firewall
