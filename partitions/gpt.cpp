#include "partitions/gpt.hpp"

#include <fcntl.h>
#include <libfdisk/libfdisk.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <set>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/file.hpp"

namespace cairn::partitions {

namespace {

// ---- RAII owners of libfdisk handles ----

struct ContextUnref {
    void operator()(fdisk_context* c) const { fdisk_unref_context(c); }
};
struct PartitionUnref {
    void operator()(fdisk_partition* p) const { fdisk_unref_partition(p); }
};
struct ParttypeUnref {
    void operator()(fdisk_parttype* t) const { fdisk_unref_parttype(t); }
};
struct ScriptUnref {
    void operator()(fdisk_script* s) const { fdisk_unref_script(s); }
};
struct CFree {
    void operator()(char* p) const { std::free(p); }
};

using ContextPtr = std::unique_ptr<fdisk_context, ContextUnref>;
using PartitionPtr = std::unique_ptr<fdisk_partition, PartitionUnref>;
using ParttypePtr = std::unique_ptr<fdisk_parttype, ParttypeUnref>;
using ScriptPtr = std::unique_ptr<fdisk_script, ScriptUnref>;
using CString = std::unique_ptr<char, CFree>;

bool is_zero(const Uuid& u) {
    return std::all_of(u.bytes.begin(), u.bytes.end(), [](uint8_t b) { return b == 0; });
}

std::string describe(size_t index, const GptEntry& e) {
    return "partition " + std::to_string(index + 1) + " '" + e.label + "'";
}

// Counts the UTF-16 code units of a UTF-8 label the way libfdisk stores it, or explains why it
// cannot be stored: malformed UTF-8, NUL bytes, or characters beyond U+FFFF (libfdisk's encoder
// rejects surrogate pairs).
size_t utf16_units(const std::string& text, const std::string& what) {
    size_t units = 0;
    for (size_t i = 0; i < text.size();) {
        auto c = static_cast<unsigned char>(text[i]);
        uint32_t cp = 0;
        size_t len = 0;
        if (c == 0) fail(what + ": the label contains a NUL byte");
        if (c < 0x80) {
            cp = c;
            len = 1;
        } else if ((c & 0xE0) == 0xC0) {
            cp = c & 0x1F;
            len = 2;
        } else if ((c & 0xF0) == 0xE0) {
            cp = c & 0x0F;
            len = 3;
        } else if ((c & 0xF8) == 0xF0) {
            fail(what + ": the label has a character beyond U+FFFF, which libfdisk cannot store in a GPT name");
        } else {
            fail(what + ": the label is not valid UTF-8");
        }
        if (i + len > text.size()) fail(what + ": the label is not valid UTF-8 (truncated sequence)");
        for (size_t k = 1; k < len; ++k) {
            auto cc = static_cast<unsigned char>(text[i + k]);
            if ((cc & 0xC0) != 0x80) fail(what + ": the label is not valid UTF-8");
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800))
            fail(what + ": the label is not valid UTF-8 (overlong sequence)");
        if (cp >= 0xD800 && cp <= 0xDFFF) fail(what + ": the label is not valid UTF-8 (surrogate code point)");
        ++units;
        i += len;
    }
    return units;
}

// ---- libfdisk session on one image ----

// libfdisk reports through an "ask" callback. We never answer questions (dialogs are disabled
// too), drop info lines, and keep warnings so that an error can quote what libfdisk complained about.
struct Messages {
    std::vector<std::string> warnings;

    std::string joined() const {
        std::string out;
        for (const auto& w : warnings) out += (out.empty() ? "" : "; ") + w;
        return out;
    }
};

extern "C" int collect_messages(fdisk_context*, fdisk_ask* ask, void* data) noexcept {
    auto* messages = static_cast<Messages*>(data);
    try {
        switch (fdisk_ask_get_type(ask)) {
            case FDISK_ASKTYPE_WARN:
            case FDISK_ASKTYPE_WARNX: {
                const char* text = fdisk_ask_print_get_mesg(ask);
                std::string line = text ? text : "(no message)";
                int err = fdisk_ask_get_type(ask) == FDISK_ASKTYPE_WARN ? fdisk_ask_print_get_errno(ask) : 0;
                if (err) line += ": " + errno_text(err);
                messages->warnings.push_back(std::move(line));
                return 0;
            }
            case FDISK_ASKTYPE_INFO:
                return 0;
            default:
                return -EINVAL;  // a question: there is nobody to answer it
        }
    } catch (...) {
        return -ENOMEM;
    }
}

class Session {
public:
    Session(const fs::path& image, bool writable) : image_(image.string()) {
        fd_ = open_file(image, writable ? O_RDWR : O_RDONLY);
        struct stat st {};
        if (::fstat(fd_.get(), &st) != 0) fail_errno(image_);
        if (writable && !S_ISREG(st.st_mode)) fail(image_ + ": not a regular file; write_gpt writes only image files");
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) fail(image_ + ": neither a regular file nor a block device");
        file_size_ = static_cast<uint64_t>(st.st_size);

        ctx_.reset(fdisk_new_context());
        if (!ctx_) fail(image_ + ": cannot allocate a libfdisk context");
        check(fdisk_set_ask(ctx_.get(), collect_messages, &messages_), "setting up libfdisk");
        check(fdisk_disable_dialogs(ctx_.get(), 1), "setting up libfdisk");
        // List-only mode skips blkid's search for foreign signatures, which only reads are spared.
        if (!writable) check(fdisk_enable_listonly(ctx_.get(), 1), "setting up libfdisk");
        check(fdisk_assign_device_by_fd(ctx_.get(), fd_.get(), image_.c_str(), writable ? 0 : 1),
              "opening with libfdisk");
    }
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    fdisk_context* ctx() const { return ctx_.get(); }
    const std::string& image() const { return image_; }
    uint64_t file_size() const { return file_size_; }
    Messages& messages() { return messages_; }

    // Throws "<image>: <doing>: <strerror> (libfdisk: <warnings>)" when rc < 0.
    void check(int rc, const std::string& doing) {
        if (rc < 0) fail_fdisk(doing, -rc);
    }

    [[noreturn]] void fail_fdisk(const std::string& doing, int err) {
        std::string message = image_ + ": " + doing;
        if (err) message += ": " + errno_text(err);
        if (!messages_.warnings.empty()) message += " (libfdisk: " + messages_.joined() + ")";
        fail(message);
    }

    // Flushes written data (fsync, no global sync()) and lets go of the file descriptor.
    void finish() { check(fdisk_deassign_device(ctx_.get(), 1), "flushing"); }

private:
    std::string image_;
    uint64_t file_size_ = 0;
    UniqueFd fd_;        // outlives the context, which only borrows it
    Messages messages_;  // outlives the context, which calls back into it
    ContextPtr ctx_;
};

// Keeps a script attached to a context for the duration of a scope. A script holds a reference
// on its context and the context one on its script, so the script must be detached again or
// neither is ever freed.
class AttachedScript {
public:
    AttachedScript(fdisk_context* ctx, fdisk_script* script) : ctx_(ctx) { fdisk_set_script(ctx_, script); }
    AttachedScript(const AttachedScript&) = delete;
    AttachedScript& operator=(const AttachedScript&) = delete;
    ~AttachedScript() { fdisk_set_script(ctx_, nullptr); }

private:
    fdisk_context* ctx_;
};

}  // namespace

uint64_t gpt_last_usable_lba(uint64_t disk_size) {
    const uint64_t sectors = disk_size / gpt_sector_size;
    if (sectors < gpt_first_usable_lba + gpt_backup_sectors + 1)
        fail("a GPT disk needs at least " +
             std::to_string((gpt_first_usable_lba + gpt_backup_sectors + 1) * gpt_sector_size) + " bytes, not " +
             std::to_string(disk_size));
    return sectors - gpt_backup_sectors - 1;
}

void validate_gpt(const GptTable& table, const std::string& what) {
    if (table.disk_size == 0 || table.disk_size % gpt_sector_size != 0)
        fail(what + ": disk size " + std::to_string(table.disk_size) + " is not a positive multiple of 512 bytes");
    const uint64_t last_usable = [&] {
        try {
            return gpt_last_usable_lba(table.disk_size);
        } catch (const Error& e) {
            fail(what + ": " + e.what());
        }
    }();
    if (is_zero(table.disk_guid)) fail(what + ": the disk GUID is all zeros");
    if (table.entries.size() > gpt_entry_count)
        fail(what + ": " + std::to_string(table.entries.size()) + " partitions, a GPT holds at most " +
             std::to_string(gpt_entry_count));

    const uint64_t first_byte = gpt_first_usable_lba * gpt_sector_size;
    const uint64_t end_byte = (last_usable + 1) * gpt_sector_size;  // one past the last usable byte
    std::set<std::array<uint8_t, 16>> uuids;
    for (size_t i = 0; i < table.entries.size(); ++i) {
        const GptEntry& e = table.entries[i];
        const std::string who = what + ": " + describe(i, e);
        size_t units = utf16_units(e.label, who);
        if (units > gpt_max_label_units)
            fail(who + ": the label is " + std::to_string(units) + " UTF-16 units long, a GPT name holds at most " +
                 std::to_string(gpt_max_label_units));
        if (is_zero(e.type)) fail(who + ": the type GUID is all zeros, which marks an unused entry");
        if (is_zero(e.uuid)) fail(who + ": the partition GUID is all zeros");
        if (!uuids.insert(e.uuid.bytes).second) fail(who + ": partition GUID " + e.uuid.str() + " is used twice");
        if (e.offset % gpt_sector_size != 0)
            fail(who + ": offset " + std::to_string(e.offset) + " is not a multiple of 512 bytes");
        if (e.size == 0 || e.size % gpt_sector_size != 0)
            fail(who + ": size " + std::to_string(e.size) + " is not a positive multiple of 512 bytes");
        if (e.offset < first_byte)
            fail(who + ": starts at byte " + std::to_string(e.offset) +
                 ", inside the primary GPT (the first usable byte is " + std::to_string(first_byte) + ")");
        if (e.offset >= end_byte || e.size > end_byte - e.offset)
            fail(who + ": ends past the last usable sector " + std::to_string(last_usable) + " (partition bytes " +
                 std::to_string(e.offset) + "+" + std::to_string(e.size) + ", usable area ends at byte " +
                 std::to_string(end_byte) + "; the backup GPT takes the last " +
                 std::to_string(gpt_backup_sectors * gpt_sector_size) + " bytes)");
    }

    std::vector<size_t> order(table.entries.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return table.entries[a].offset < table.entries[b].offset; });
    for (size_t k = 1; k < order.size(); ++k) {
        const GptEntry& prev = table.entries[order[k - 1]];
        const GptEntry& cur = table.entries[order[k]];
        if (prev.offset + prev.size > cur.offset)
            fail(what + ": " + describe(order[k], cur) + " (bytes " + std::to_string(cur.offset) + "+" +
                 std::to_string(cur.size) + ") overlaps " + describe(order[k - 1], prev) + " (bytes " +
                 std::to_string(prev.offset) + "+" + std::to_string(prev.size) + ")");
    }
}

void write_gpt(const fs::path& image, const GptTable& table) {
    const std::string what = image.string();
    validate_gpt(table, what);

    Session session(image, true);
    fdisk_context* ctx = session.ctx();
    if (session.file_size() != table.disk_size)
        fail(what + ": the file is " + std::to_string(session.file_size()) + " bytes, the GPT describes a disk of " +
             std::to_string(table.disk_size) + " bytes");
    if (fdisk_get_sector_size(ctx) != gpt_sector_size)
        fail(what + ": libfdisk sees " + std::to_string(fdisk_get_sector_size(ctx)) + "-byte sectors, not 512");
    const uint64_t sectors = table.disk_size / gpt_sector_size;
    const uint64_t last_usable = gpt_last_usable_lba(table.disk_size);

    // Boot code from whatever the first sector held would otherwise be kept (fdisk --protect-boot).
    session.check(fdisk_enable_bootbits_protection(ctx, 0), "setting up libfdisk");

    // Left alone, libfdisk draws a random disk GUID and puts the first usable LBA where its
    // alignment heuristics say (2048 for a plain file). A script header fixes both, and the table
    // length, before the label is made.
    {
        ScriptPtr script(fdisk_new_script(ctx));
        if (!script) fail(what + ": cannot allocate a libfdisk script");
        session.check(fdisk_script_set_header(script.get(), "label-id", table.disk_guid.str().c_str()),
                      "setting up libfdisk");
        session.check(fdisk_script_set_header(script.get(), "first-lba", std::to_string(gpt_first_usable_lba).c_str()),
                      "setting up libfdisk");
        session.check(fdisk_script_set_header(script.get(), "last-lba", std::to_string(last_usable).c_str()),
                      "setting up libfdisk");
        session.check(fdisk_script_set_header(script.get(), "table-length", std::to_string(gpt_entry_count).c_str()),
                      "setting up libfdisk");
        AttachedScript attached(ctx, script.get());
        session.check(fdisk_create_disklabel(ctx, "gpt"), "creating a GPT");
    }

    // Check that libfdisk took the header values (it quietly shrinks the table on small disks).
    session.check(fdisk_reset_alignment(ctx), "reading back the new GPT header");
    if (fdisk_get_first_lba(ctx) != gpt_first_usable_lba || fdisk_get_last_lba(ctx) != last_usable ||
        fdisk_get_npartitions(ctx) != gpt_entry_count || fdisk_get_nsectors(ctx) != sectors)
        fail(what + ": libfdisk made a GPT with usable sectors " + std::to_string(fdisk_get_first_lba(ctx)) + ".." +
             std::to_string(fdisk_get_last_lba(ctx)) + " and " + std::to_string(fdisk_get_npartitions(ctx)) +
             " entries on " + std::to_string(fdisk_get_nsectors(ctx)) + " sectors, expected " +
             std::to_string(gpt_first_usable_lba) + ".." + std::to_string(last_usable) + ", " +
             std::to_string(gpt_entry_count) + " entries, " + std::to_string(sectors) + " sectors");
    {
        char* raw = nullptr;
        session.check(fdisk_get_disklabel_id(ctx, &raw), "reading back the disk GUID");
        CString id(raw);
        if (!id || Uuid::parse(id.get(), what + ": disk GUID from libfdisk") != table.disk_guid)
            fail(what + ": libfdisk did not take disk GUID " + table.disk_guid.str());
    }

    fdisk_label* label = fdisk_get_label(ctx, nullptr);
    if (!label) fail(what + ": libfdisk has no label after creating the GPT");
    for (size_t i = 0; i < table.entries.size(); ++i) {
        const GptEntry& e = table.entries[i];
        const std::string who = describe(i, e);

        PartitionPtr pa(fdisk_new_partition());
        if (!pa) fail(what + ": cannot allocate a libfdisk partition");
        ParttypePtr type(fdisk_label_parse_parttype(label, e.type.str().c_str()));
        if (!type) fail(what + ": " + who + ": libfdisk does not take type GUID " + e.type.str());
        session.check(fdisk_partition_set_partno(pa.get(), i), who);
        session.check(fdisk_partition_set_start(pa.get(), e.offset / gpt_sector_size), who);
        session.check(fdisk_partition_set_size(pa.get(), e.size / gpt_sector_size), who);
        // Otherwise libfdisk rounds the end down to its alignment grain.
        session.check(fdisk_partition_size_explicit(pa.get(), 1), who);
        session.check(fdisk_partition_set_type(pa.get(), type.get()), who);
        session.check(fdisk_partition_set_name(pa.get(), e.label.c_str()), who);
        session.check(fdisk_partition_set_uuid(pa.get(), e.uuid.str().c_str()), who);

        size_t partno = 0;
        session.check(fdisk_add_partition(ctx, pa.get(), &partno), "adding " + who);
        if (partno != i)
            fail(what + ": libfdisk put " + who + " in slot " + std::to_string(partno + 1) + " of the table");
        session.check(fdisk_gpt_set_partition_attrs(ctx, i, e.attributes), "setting the attributes of " + who);
    }

    session.check(fdisk_write_disklabel(ctx), "writing the GPT");
    session.finish();
}

GptTable read_gpt(const fs::path& image) {
    const std::string what = image.string();
    Session session(image, false);
    fdisk_context* ctx = session.ctx();

    if (!fdisk_has_label(ctx)) fail(what + ": no valid GPT: no partition table at all");
    if (!fdisk_is_label(ctx, GPT)) {
        // With both GPT headers unreadable libfdisk falls back to reading the protective MBR as
        // an MBR partition table with one 0xEE partition.
        if (fdisk_is_label(ctx, DOS) && fdisk_is_partition_used(ctx, 0)) {
            fdisk_partition* raw = nullptr;
            int rc = fdisk_get_partition(ctx, 0, &raw);
            PartitionPtr first(raw);
            if (rc == 0 && first) {
                fdisk_parttype* type = fdisk_partition_get_type(first.get());
                if (type && fdisk_parttype_get_code(type) == 0xEE)
                    fail(what + ": no valid GPT: both copies are damaged (only the protective MBR is intact)");
            }
        }
        fdisk_label* label = fdisk_get_label(ctx, nullptr);
        const char* name = label ? fdisk_label_get_name(label) : nullptr;
        fail(what + ": no valid GPT: it has a" + (name ? std::string(" ") + name : std::string("nother")) +
             " partition table");
    }
    // libfdisk takes the surviving copy when one is damaged and only warns; for an image built
    // here any damage is an error.
    if (!session.messages().warnings.empty())
        fail(what + ": damaged GPT (libfdisk: " + session.messages().joined() + ")");
    int problems = fdisk_verify_disklabel(ctx);
    if (problems < 0) session.check(problems, "verifying the GPT");
    if (problems > 0) fail(what + ": damaged GPT (libfdisk: " + session.messages().joined() + ")");

    const uint64_t sector = fdisk_get_sector_size(ctx);
    GptTable table;
    table.disk_size = fdisk_get_nsectors(ctx) * sector;
    {
        char* raw = nullptr;
        session.check(fdisk_get_disklabel_id(ctx, &raw), "reading the disk GUID");
        CString id(raw);
        if (!id) fail(what + ": the GPT has no disk GUID");
        table.disk_guid = Uuid::parse(id.get(), what + ": disk GUID");
    }

    const size_t slots = fdisk_get_npartitions(ctx);
    size_t first_unused = slots;
    for (size_t n = 0; n < slots; ++n) {
        if (!fdisk_is_partition_used(ctx, n)) {
            first_unused = std::min(first_unused, n);
            continue;
        }
        const std::string who = "partition " + std::to_string(n + 1);
        if (first_unused < n)
            fail(what + ": " + who + " is used but partition " + std::to_string(first_unused + 1) +
                 " is empty; Cairn reads only tables without gaps");

        fdisk_partition* raw = nullptr;
        int rc = fdisk_get_partition(ctx, n, &raw);
        PartitionPtr pa(raw);
        session.check(rc, "reading " + who);
        if (!pa) fail(what + ": libfdisk returned nothing for " + who);

        GptEntry e;
        const char* name = fdisk_partition_get_name(pa.get());
        e.label = name ? name : "";
        fdisk_parttype* type = fdisk_partition_get_type(pa.get());  // owned by pa
        const char* type_text = type ? fdisk_parttype_get_string(type) : nullptr;
        if (!type_text) fail(what + ": " + who + " has no type GUID");
        e.type = Uuid::parse(type_text, what + ": type GUID of " + who);
        const char* uuid_text = fdisk_partition_get_uuid(pa.get());
        if (!uuid_text) fail(what + ": " + who + " has no partition GUID");
        e.uuid = Uuid::parse(uuid_text, what + ": partition GUID of " + who);
        e.offset = fdisk_partition_get_start(pa.get()) * sector;
        e.size = fdisk_partition_get_size(pa.get()) * sector;
        session.check(fdisk_gpt_get_partition_attrs(ctx, n, &e.attributes), "reading the attributes of " + who);
        table.entries.push_back(std::move(e));
    }
    return table;
}

}  // namespace cairn::partitions
