#include "imager/verity.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using cairn::test::Scratch;
using cairn::test::write_random;
namespace fs = std::filesystem;

namespace {

const Uuid test_uuid = Uuid::parse("5b0c58f6-1c3e-4d6e-9d52-0e1f7a3c9b11", "test uuid");

std::string veritysetup() {
    if (auto found = find_program("veritysetup")) return found->string();
    for (const char* path : {"/usr/sbin/veritysetup", "/sbin/veritysetup"})
        if (fs::exists(path)) return path;
    return {};
}

std::vector<uint8_t> make_salt(size_t size, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<uint8_t> salt(size);
    for (auto& b : salt) b = static_cast<uint8_t>(rng());
    return salt;
}

verity::Params params_for(uint64_t blocks, size_t salt_size, uint32_t dbs = 4096, uint32_t hbs = 4096) {
    verity::Params p;
    p.data_block_size = dbs;
    p.hash_block_size = hbs;
    p.data_blocks = blocks;
    p.salt = make_salt(salt_size, static_cast<uint32_t>(blocks + salt_size));
    p.uuid = test_uuid;
    return p;
}

struct Reference {
    std::string root;
    std::string output;
};

// Runs `veritysetup format` over the whole data file with p's salt, UUID and block sizes.
Reference reference_format(const fs::path& data, const fs::path& hash, const verity::Params& p,
                           uint64_t hash_offset = 0) {
    std::vector<std::string> argv{veritysetup(),
                                  "format",
                                  "--hash=sha256",
                                  "--format=1",
                                  "--salt=" + (p.salt.empty() ? std::string("-") : to_hex(p.salt)),
                                  "--uuid=" + p.uuid.str(),
                                  "--data-block-size=" + std::to_string(p.data_block_size),
                                  "--hash-block-size=" + std::to_string(p.hash_block_size),
                                  "--data-blocks=" + std::to_string(p.data_blocks)};
    if (hash_offset) argv.push_back("--hash-offset=" + std::to_string(hash_offset));
    argv.push_back(data.string());
    argv.push_back(hash.string());
    Reference ref;
    ref.output = run_checked(argv);
    std::istringstream lines(ref.output);
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind("Root hash:", 0) != 0) continue;
        std::istringstream fields(line.substr(10));
        fields >> ref.root;
    }
    return ref;
}

verity::Result format_file(const fs::path& data, const fs::path& hash, const verity::Params& p, unsigned threads = 2,
                           uint64_t data_offset = 0, uint64_t hash_offset = 0) {
    UniqueFd dfd = open_file(data, O_RDONLY);
    UniqueFd hfd = open_file(hash, O_RDWR | O_CREAT, 0644);
    return verity::format(dfd.get(), data_offset, hfd.get(), hash_offset, p, threads);
}

verity::VerifyResult verify_file(const fs::path& data, const fs::path& hash, uint64_t data_offset = 0,
                                 uint64_t hash_offset = 0, unsigned threads = 2) {
    UniqueFd dfd = open_file(data, O_RDONLY);
    UniqueFd hfd = open_file(hash, O_RDONLY);
    return verity::verify(dfd.get(), data_offset, hfd.get(), hash_offset, threads);
}

void flip_byte(const fs::path& path, uint64_t offset) {
    UniqueFd fd = open_file(path, O_RDWR);
    uint8_t b = 0;
    pread_exact(fd.get(), &b, 1, offset, path.string());
    b ^= 0x5a;
    pwrite_exact(fd.get(), &b, 1, offset, path.string());
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

class VerityTool : public ::testing::Test {
protected:
    void SetUp() override { ASSERT_FALSE(veritysetup().empty()) << "veritysetup not found (package cryptsetup-bin)"; }
    Scratch scratch;
};

// ---- byte-identical to veritysetup ----

struct Case {
    const char* name;
    uint64_t blocks;
    size_t salt_size;
    uint32_t data_block_size = 4096;
    uint32_t hash_block_size = 4096;
    unsigned levels;
};

void PrintTo(const Case& c, std::ostream* os) {
    *os << c.name << " (" << c.blocks << " blocks of " << c.data_block_size << ", hash blocks " << c.hash_block_size
        << ", salt " << c.salt_size << " bytes)";
}

class VeritysetupMatch : public ::testing::TestWithParam<Case> {
protected:
    void SetUp() override { ASSERT_FALSE(veritysetup().empty()) << "veritysetup not found (package cryptsetup-bin)"; }
    Scratch scratch;
};

TEST_P(VeritysetupMatch, HashDeviceAndRootAreIdentical) {
    const Case& c = GetParam();
    verity::Params p = params_for(c.blocks, c.salt_size, c.data_block_size, c.hash_block_size);
    write_random(scratch / "data", c.blocks * c.data_block_size, static_cast<uint32_t>(c.blocks));

    Reference ref = reference_format(scratch / "data", scratch / "ref.hash", p);
    ASSERT_EQ(ref.root.size(), 64u) << ref.output;
    verity::Result ours = format_file(scratch / "data", scratch / "ours.hash", p);

    EXPECT_EQ(to_hex(ours.root_hash), ref.root);
    EXPECT_EQ(verity::tree_levels(p), c.levels);
    const uint64_t ref_size = fs::file_size(scratch / "ref.hash");
    EXPECT_EQ(verity::hash_device_size(p), ref_size);
    EXPECT_EQ(ours.hash_size, ref_size);
    EXPECT_NE(ref.output.find("Hash device size: \t" + std::to_string(ref_size) + " [bytes]"), std::string::npos)
        << ref.output;
    std::string theirs = read_file(scratch / "ref.hash");
    std::string mine = read_file(scratch / "ours.hash");
    ASSERT_EQ(mine.size(), theirs.size());
    EXPECT_TRUE(mine == theirs) << "hash devices differ";

    // veritysetup accepts ours, and our verify accepts theirs.
    RunResult check = run({veritysetup(), "verify", (scratch / "data").string(), (scratch / "ours.hash").string(),
                           to_hex(ours.root_hash)});
    EXPECT_EQ(check.exit_code, 0) << check.err;
    verity::VerifyResult v = verify_file(scratch / "data", scratch / "ref.hash");
    EXPECT_TRUE(v.ok) << v.problem;
    EXPECT_EQ(to_hex(v.root_hash), ref.root);
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, VeritysetupMatch,
    ::testing::Values(Case{"OneBlock", 1, 32, 4096, 4096, 0}, Case{"TwoBlocks", 2, 32, 4096, 4096, 1},
                      Case{"OneFullLeaf", 128, 32, 4096, 4096, 1}, Case{"OneMoreThanALeaf", 129, 32, 4096, 4096, 2},
                      Case{"Blocks1000", 1000, 32, 4096, 4096, 2}, Case{"EmptySalt", 1000, 0, 4096, 4096, 2},
                      Case{"Salt256", 1000, 256, 4096, 4096, 2}, Case{"OddSalt", 1000, 7, 4096, 4096, 2},
                      Case{"ThreeLevels", 128 * 128 + 1, 32, 4096, 4096, 3},
                      Case{"SmallBlocks", 3000, 32, 512, 1024, 3}, Case{"SmallHashBlocks", 3000, 32, 4096, 512, 3}),
    [](const ::testing::TestParamInfo<Case>& param_info) { return std::string(param_info.param.name); });

// ---- properties of our own format ----

TEST_F(VerityTool, ThreadCountDoesNotChangeTheOutput) {
    // 40000 blocks are several work segments, with a partial one at the end.
    verity::Params p = params_for(40000, 32);
    write_random(scratch / "data", p.data_blocks * 4096, 7);
    verity::Result one = format_file(scratch / "data", scratch / "one.hash", p, 1);
    verity::Result three = format_file(scratch / "data", scratch / "three.hash", p, 3);
    verity::Result automatic = format_file(scratch / "data", scratch / "auto.hash", p, 0);
    EXPECT_EQ(one.root_hash, three.root_hash);
    EXPECT_EQ(one.root_hash, automatic.root_hash);
    EXPECT_TRUE(read_file(scratch / "one.hash") == read_file(scratch / "three.hash"));
    EXPECT_TRUE(read_file(scratch / "one.hash") == read_file(scratch / "auto.hash"));
    Reference ref = reference_format(scratch / "data", scratch / "ref.hash", p);
    EXPECT_EQ(to_hex(one.root_hash), ref.root);
}

TEST_F(VerityTool, ReportsProgressUpToTheTotal) {
    verity::Params p = params_for(10000, 32);
    write_random(scratch / "data", p.data_blocks * 4096, 8);
    UniqueFd dfd = open_file(scratch / "data", O_RDONLY);
    UniqueFd hfd = open_file(scratch / "hash", O_RDWR | O_CREAT);
    std::vector<std::pair<uint64_t, uint64_t>> calls;
    verity::format(dfd.get(), 0, hfd.get(), 0, p, 2,
                   [&](uint64_t done, uint64_t total) { calls.emplace_back(done, total); });
    ASSERT_FALSE(calls.empty());
    for (size_t i = 0; i < calls.size(); ++i) {
        EXPECT_EQ(calls[i].second, 10000u);
        EXPECT_LE(calls[i].first, 10000u);
        if (i > 0) {
            EXPECT_GE(calls[i].first, calls[i - 1].first);
        }
    }
    EXPECT_EQ(calls.back().first, 10000u);
}

TEST_F(VerityTool, AnErrorFromProgressStopsTheFormat) {
    verity::Params p = params_for(10000, 32);
    write_random(scratch / "data", p.data_blocks * 4096, 8);
    UniqueFd dfd = open_file(scratch / "data", O_RDONLY);
    UniqueFd hfd = open_file(scratch / "hash", O_RDWR | O_CREAT);
    EXPECT_THROW(verity::format(dfd.get(), 0, hfd.get(), 0, p, 2, [](uint64_t, uint64_t) { fail("cancelled"); }),
                 Error);
    // The superblock is written last, so nothing that looks like a verity device was left behind.
    EXPECT_THROW(verity::read_superblock(hfd.get(), 0, "hash"), Error);
}

TEST_F(VerityTool, OffsetsInsideLargerFilesGiveTheSameTree) {
    verity::Params p = params_for(1000, 32);
    const uint64_t data_offset = 12345;  // not even sector-aligned
    const uint64_t hash_offset = 3 * 4096;
    write_random(scratch / "data", p.data_blocks * 4096, 11);
    std::string data = read_file(scratch / "data");
    Reference ref = reference_format(scratch / "data", scratch / "ref.hash", p);
    std::string ref_hash = read_file(scratch / "ref.hash");

    // [junk | data | junk] and [junk | hash area | junk]
    std::string junk_before(data_offset, '\x11'), junk_after(5000, '\x22');
    write_file_atomic(scratch / "big.data", junk_before + data + junk_after);
    std::string hash_before(hash_offset, '\x33'), hash_after(7000, '\x44');
    write_file_atomic(scratch / "big.hash", hash_before + std::string(ref_hash.size(), '\x55') + hash_after);

    verity::Result ours = format_file(scratch / "big.data", scratch / "big.hash", p, 2, data_offset, hash_offset);
    EXPECT_EQ(to_hex(ours.root_hash), ref.root);
    std::string big = read_file(scratch / "big.hash");
    ASSERT_EQ(big.size(), hash_offset + ref_hash.size() + hash_after.size());
    EXPECT_EQ(big.substr(0, hash_offset), hash_before);
    EXPECT_TRUE(big.substr(hash_offset, ref_hash.size()) == ref_hash);
    EXPECT_EQ(big.substr(hash_offset + ref_hash.size()), hash_after);

    verity::VerifyResult v = verify_file(scratch / "big.data", scratch / "big.hash", data_offset, hash_offset);
    EXPECT_TRUE(v.ok) << v.problem;
    EXPECT_EQ(v.root_hash, ours.root_hash);
    // veritysetup reads a hash area at an offset too.
    RunResult check = run({veritysetup(), "verify", "--hash-offset=" + std::to_string(hash_offset),
                           (scratch / "data").string(), (scratch / "big.hash").string(), ref.root});
    EXPECT_EQ(check.exit_code, 0) << check.err;
}

TEST_F(VerityTool, HashAreaAfterTheDataInTheSameFile) {
    verity::Params p = params_for(300, 32);
    const uint64_t data_size = p.data_blocks * 4096;
    write_random(scratch / "disk", data_size, 12);
    verity::Result ours = format_file(scratch / "disk", scratch / "disk", p, 2, 0, data_size);
    EXPECT_EQ(fs::file_size(scratch / "disk"), data_size + verity::hash_device_size(p));
    verity::VerifyResult v = verify_file(scratch / "disk", scratch / "disk", 0, data_size);
    EXPECT_TRUE(v.ok) << v.problem;
    // Overlapping the data is refused, and nothing is written.
    EXPECT_THROW(format_file(scratch / "disk", scratch / "disk", p, 2, 0, data_size - 4096), Error);
    EXPECT_EQ(ours.root_hash, verify_file(scratch / "disk", scratch / "disk", 0, data_size).root_hash);
}

// ---- verify ----

TEST_F(VerityTool, VerifyFindsAFlippedDataByte) {
    verity::Params p = params_for(1000, 32);
    write_random(scratch / "data", p.data_blocks * 4096, 13);
    verity::Result ours = format_file(scratch / "data", scratch / "hash", p);
    verity::VerifyResult good = verify_file(scratch / "data", scratch / "hash");
    ASSERT_TRUE(good.ok) << good.problem;
    EXPECT_EQ(good.root_hash, ours.root_hash);
    EXPECT_TRUE(good.problem.empty());

    flip_byte(scratch / "data", 777 * 4096 + 100);
    verity::VerifyResult bad = verify_file(scratch / "data", scratch / "hash");
    EXPECT_FALSE(bad.ok);
    EXPECT_NE(bad.root_hash, ours.root_hash);
    // 1000 blocks: block 1 is the top (level 1), blocks 2..9 the leaves; data block 777 is in leaf 6.
    EXPECT_EQ(bad.problem, "hash block 8 (level 0) differs: data block 777 does not match its digest");
    // veritysetup agrees that this is corrupt.
    EXPECT_NE(
        run({veritysetup(), "verify", (scratch / "data").string(), (scratch / "hash").string(), to_hex(ours.root_hash)})
            .exit_code,
        0);
}

TEST_F(VerityTool, VerifyFindsFlippedHashBytes) {
    verity::Params p = params_for(1000, 32);
    write_random(scratch / "data", p.data_blocks * 4096, 14);
    verity::Result ours = format_file(scratch / "data", scratch / "hash", p);
    std::string pristine = read_file(scratch / "hash");

    // A digest in a leaf block.
    flip_byte(scratch / "hash", 3 * 4096 + 5 * 32 + 1);
    verity::VerifyResult leaf = verify_file(scratch / "data", scratch / "hash");
    EXPECT_FALSE(leaf.ok);
    EXPECT_EQ(leaf.root_hash, ours.root_hash);  // computed from the data, which is intact
    EXPECT_EQ(leaf.problem, "hash block 3 (level 0) differs: data block 133 does not match its digest");

    // The zero tail of the last leaf block (1000 = 7 * 128 + 104 digests).
    write_file_atomic(scratch / "hash", pristine);
    flip_byte(scratch / "hash", 9 * 4096 + 104 * 32);
    EXPECT_EQ(verify_file(scratch / "data", scratch / "hash").problem,
              "hash block 9 (level 0) differs: bytes after the last digest are not zero");

    // The top block.
    write_file_atomic(scratch / "hash", pristine);
    flip_byte(scratch / "hash", 1 * 4096 + 2 * 32);
    EXPECT_EQ(verify_file(scratch / "data", scratch / "hash").problem,
              "hash block 1 (level 1) differs: the digest of hash block 4 (level 0) does not match");

    write_file_atomic(scratch / "hash", pristine);
    EXPECT_TRUE(verify_file(scratch / "data", scratch / "hash").ok);
}

TEST_F(VerityTool, VerifyInsideAThreeLevelTree) {
    verity::Params p = params_for(128 * 128 + 1, 32);
    write_random(scratch / "data", p.data_blocks * 4096, 15);
    format_file(scratch / "data", scratch / "hash", p);
    // Layout: superblock, top (1 block), level 1 (2 blocks: 2, 3), leaves from block 4.
    flip_byte(scratch / "hash", 3 * 4096);
    EXPECT_EQ(verify_file(scratch / "data", scratch / "hash").problem,
              "hash block 3 (level 1) differs: the digest of hash block 132 (level 0) does not match");
}

TEST_F(VerityTool, VerifyOfASingleBlockHasNoTreeToCompare) {
    verity::Params p = params_for(1, 0);
    write_random(scratch / "data", 4096, 16);
    verity::Result ours = format_file(scratch / "data", scratch / "hash", p);
    EXPECT_EQ(ours.root_hash, sha256(read_file(scratch / "data")));  // empty salt: plain sha256 of the block
    verity::VerifyResult v = verify_file(scratch / "data", scratch / "hash");
    EXPECT_TRUE(v.ok);
    flip_byte(scratch / "data", 10);
    EXPECT_NE(verify_file(scratch / "data", scratch / "hash").root_hash, ours.root_hash);
}

TEST_F(VerityTool, VerifyRejectsUnsupportedSuperblocks) {
    verity::Params p = params_for(10, 32);
    write_random(scratch / "data", p.data_blocks * 4096, 17);
    format_file(scratch / "data", scratch / "hash", p);
    std::string pristine = read_file(scratch / "hash");

    std::string chrome = pristine;
    chrome[12] = 0;  // hash type 0
    write_file_atomic(scratch / "hash", chrome);
    EXPECT_NE(error_of([&] { verify_file(scratch / "data", scratch / "hash"); }).find("hash type 0"),
              std::string::npos);

    std::string sha1 = pristine;
    sha1.replace(32, 6, std::string("sha1\0\0", 6));
    write_file_atomic(scratch / "hash", sha1);
    EXPECT_NE(error_of([&] { verify_file(scratch / "data", scratch / "hash"); }).find("\"sha1\" is not supported"),
              std::string::npos);

    // Data shorter than the superblock says: an error naming the data file.
    write_file_atomic(scratch / "hash", pristine);
    fs::resize_file(scratch / "data", 5 * 4096);
    std::string message = error_of([&] { verify_file(scratch / "data", scratch / "hash"); });
    EXPECT_NE(message.find((scratch / "data").string()), std::string::npos) << message;
}

// ---- superblock ----

TEST_F(VerityTool, ReadsTheSuperblockVeritysetupWrote) {
    verity::Params p = params_for(1000, 32, 4096, 1024);
    write_random(scratch / "data", p.data_blocks * 4096, 18);
    reference_format(scratch / "data", scratch / "hash", p);
    UniqueFd fd = open_file(scratch / "hash", O_RDONLY);
    verity::Superblock sb = verity::read_superblock(fd.get(), 0, "hash");
    EXPECT_EQ(sb.version, 1u);
    EXPECT_EQ(sb.hash_type, 1u);
    EXPECT_EQ(sb.uuid, test_uuid);
    EXPECT_EQ(sb.algorithm, "sha256");
    EXPECT_EQ(sb.data_block_size, 4096u);
    EXPECT_EQ(sb.hash_block_size, 1024u);
    EXPECT_EQ(sb.data_blocks, 1000u);
    EXPECT_EQ(sb.salt, p.salt);
}

TEST_F(VerityTool, ReadSuperblockRejectsGarbage) {
    verity::Params p = params_for(10, 32);
    write_random(scratch / "data", p.data_blocks * 4096, 19);
    format_file(scratch / "data", scratch / "hash", p);
    const std::string pristine = read_file(scratch / "hash");
    auto read_error = [&](const std::string& bytes) {
        write_file_atomic(scratch / "bad", bytes);
        UniqueFd fd = open_file(scratch / "bad", O_RDONLY);
        return error_of([&] { verity::read_superblock(fd.get(), 0, "bad-hash-device"); });
    };
    auto patched = [&](size_t at, std::string bytes) {
        std::string s = pristine;
        s.replace(at, bytes.size(), bytes);
        return s;
    };

    write_random(scratch / "random", 4096, 20);
    std::string random = read_error(read_file(scratch / "random"));
    EXPECT_NE(random.find("bad-hash-device"), std::string::npos) << random;
    EXPECT_NE(random.find("no dm-verity superblock"), std::string::npos) << random;
    EXPECT_NE(read_error(std::string(4096, '\0')).find("no dm-verity superblock"), std::string::npos);
    EXPECT_NE(read_error("verity").find("bad-hash-device"), std::string::npos);  // too short
    EXPECT_NE(read_error(patched(8, std::string("\x02", 1))).find("version 2"), std::string::npos);
    EXPECT_NE(read_error(patched(12, std::string("\x07", 1))).find("hash type 7"), std::string::npos);
    EXPECT_NE(read_error(patched(32, std::string(32, 'a'))).find("algorithm"), std::string::npos);
    EXPECT_NE(read_error(patched(32, std::string(1, '\0'))).find("algorithm"), std::string::npos);
    EXPECT_NE(read_error(patched(64, std::string("\x00\x0c\x00\x00", 4))).find("data block size 3072"),
              std::string::npos);
    EXPECT_NE(read_error(patched(68, std::string("\x00\x01\x00\x00", 4))).find("hash block size 256"),
              std::string::npos);
    EXPECT_NE(read_error(patched(72, std::string(8, '\0'))).find("0 data blocks"), std::string::npos);
    EXPECT_NE(read_error(patched(80, std::string("\x01\x01", 2))).find("257 bytes"), std::string::npos);

    UniqueFd fd = open_file(scratch / "hash", O_RDONLY);
    EXPECT_EQ(verity::read_superblock(fd.get(), 0, "hash").data_blocks, 10u);
}

// ---- parameters, sizes, table ----

TEST(Verity, RejectsBadParameters) {
    Scratch scratch;
    write_random(scratch / "data", 64 * 1024, 21);
    auto message = [&](verity::Params p, uint64_t hash_offset = 0) {
        return error_of([&] {
            UniqueFd dfd = open_file(scratch / "data", O_RDONLY);
            UniqueFd hfd = open_file(scratch / "hash", O_RDWR | O_CREAT);
            verity::format(dfd.get(), 0, hfd.get(), hash_offset, p);
        });
    };
    verity::Params ok = params_for(16, 32);
    verity::Params p = ok;
    p.data_blocks = 0;
    EXPECT_NE(message(p).find("0 data blocks"), std::string::npos);
    p = ok;
    p.data_block_size = 3000;
    EXPECT_NE(message(p).find("data block size 3000"), std::string::npos);
    p = ok;
    p.data_block_size = 8192;
    EXPECT_NE(message(p).find("data block size 8192"), std::string::npos);
    p = ok;
    p.hash_block_size = 256;
    EXPECT_NE(message(p).find("hash block size 256"), std::string::npos);
    p = ok;
    p.salt.resize(257);
    EXPECT_NE(message(p).find("salt of 257 bytes"), std::string::npos);
    EXPECT_NE(message(ok, 512).find("hash offset 512"), std::string::npos);
    p = ok;
    p.data_blocks = 17;  // one block more than the file holds
    std::string short_data = message(p);
    EXPECT_NE(short_data.find((scratch / "data").string()), std::string::npos) << short_data;
    EXPECT_NE(short_data.find("end of file"), std::string::npos) << short_data;
    EXPECT_EQ(message(ok), "(no error)");
    EXPECT_THROW(verity::hash_device_size(verity::Params{}), Error);
}

TEST(Verity, HashDeviceSizes) {
    verity::Params p;
    p.data_blocks = 1;
    EXPECT_EQ(verity::hash_device_size(p), 4096u);  // superblock only
    p.data_blocks = 128;
    EXPECT_EQ(verity::hash_device_size(p), 2u * 4096);
    p.data_blocks = 129;
    EXPECT_EQ(verity::hash_device_size(p), 4u * 4096);  // top + 2 leaves
    p.data_blocks = (1ull << 30) / 4096;
    EXPECT_EQ(verity::hash_device_size(p), 8462336u);  // 1 GiB: 1 + 1 + 16 + 2048 blocks
    p.data_blocks = (4ull << 30) / 4096;
    EXPECT_EQ(verity::hash_device_size(p), 33824768u);  // 4 GiB: 1 + 1 + 64 + 8192 blocks
    EXPECT_EQ(verity::tree_levels(p), 3u);
}

TEST(Verity, KernelTable) {
    verity::Params p = params_for(1000, 0);
    Digest root{};
    root[0] = 0xab;
    root[31] = 0x01;
    const std::string root_hex = to_hex(root);
    EXPECT_EQ(verity::kernel_table(p, root, "/dev/vda2", "/dev/vda3"),
              "0 8000 verity 1 /dev/vda2 /dev/vda3 4096 4096 1000 1 sha256 " + root_hex + " -");
    p.salt = {0x01, 0x02, 0xff};
    EXPECT_EQ(verity::kernel_table(p, root, "8:2", "8:3", 8192),
              "0 8000 verity 1 8:2 8:3 4096 4096 1000 3 sha256 " + root_hex + " 0102ff");
    p.data_block_size = 512;
    p.hash_block_size = 1024;
    EXPECT_EQ(verity::kernel_table(p, root, "a", "b"),
              "0 1000 verity 1 a b 512 1024 1000 1 sha256 " + root_hex + " 0102ff");
    EXPECT_THROW(verity::kernel_table(p, root, "a b", "c"), Error);
    EXPECT_THROW(verity::kernel_table(p, root, "a", "b", 100), Error);
}

}  // namespace
