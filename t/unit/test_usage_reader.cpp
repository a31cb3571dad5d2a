// SPDX-License-Identifier: Apache-2.0
// The manager's usage reader (lib/store/usage_reader.hpp), as root: a
// reader started on a real store answers found and missing digests, runs as
// nobody of the store's group with nothing of its parent's, lets only its
// client (and root) connect, survives a usage store that crashes liblmdb
// (that question fails, the next is answered), dies with its parent; and a
// hostile answer (a fake reader here) makes query_usage throw, never crash
// or pass a bad value on.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "store/usage_reader.hpp"
#include "store/usage_store.hpp"
#include "token/timeutil.hpp"

#include "support.hpp"

using namespace cptoken;
using namespace test_support;

namespace {

constexpr Seconds used_at = 1767225600;  // 2026-01-01T00:00:00Z

uid_t uid_of(const char *name) {
    const passwd *found = getpwnam(name);
    if (!found) fail_msg("no user %s", name);
    return found->pw_uid;
}

gid_t gid_of(const char *name) {
    const group *found = getgrnam(name);
    if (!found) fail_msg("no group %s", name);
    return found->gr_gid;
}

// A store of group www-data whose manager is user daemon, a socket
// directory of root's, and a reader started by the test.
struct World {
    std::string store, socket_dir, socket;
    pid_t reader = -1;
    Digest used = new_digest(), also_used = new_digest(), unused = new_digest();
};

std::map<std::string, World> worlds;  // by fixture directory

World &the_world(void **state) { return worlds[fx(state).tmp]; }

void stop_reader(World &w) {
    if (w.reader <= 0) return;
    kill(w.reader, SIGKILL);
    waitpid(w.reader, nullptr, 0);
    w.reader = -1;
}

int setup_world(void **state) {
    if (setup(state) != 0) return -1;
    World &w = the_world(state);
    w.store = fx(state).store;
    w.socket_dir = fx(state).tmp + "/run";
    w.socket = w.socket_dir + "/usage.sock";
    try {
        init_store(w.store, gid_of("www-data"));
        if (mkdir(w.socket_dir.c_str(), 0755) != 0) return -1;
        UsageStore usage(w.store, Access::read_write);
        for (int i = 0; i < 3; ++i) usage.record(w.used, used_at, parse_address("192.0.2.7"));
        usage.record(w.also_used, used_at, std::nullopt);
    } catch (const std::exception &e) {
        print_error("setup: %s\n", e.what());
        return -1;
    }
    return 0;
}

int teardown_world(void **state) {
    stop_reader(the_world(state));
    worlds.erase(fx(state).tmp);
    return teardown(state);
}

pid_t start(World &w) {
    w.reader = start_usage_reader(w.store, w.socket, uid_of("daemon"));
    assert_true(w.reader > 0);
    return w.reader;
}

// The fields of /proc/PID/status, by name.
std::map<std::string, std::string> status_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::map<std::string, std::string> out;
    for (std::string line; std::getline(in, line);) {
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        value.erase(value.find_last_not_of(" \t") + 1);
        out[line.substr(0, colon)] = value;
    }
    return out;
}

bool alive(pid_t pid) { return waitpid(pid, nullptr, WNOHANG) == 0 && kill(pid, 0) == 0; }

// Whether a process that is not our child has ended: gone, or a zombie its new
// parent has not reaped yet (a container's pid 1 may never reap it).
bool ended(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    const auto paren = line.rfind(')');
    return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] == 'Z';
}

// Runs `work` in a child as user NAME; its exit status (0: work returned true).
int as_user(const char *name, const std::function<bool()> &work) {
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(30);
        const passwd *found = getpwnam(name);
        if (!found || setgroups(0, nullptr) != 0 || setgid(found->pw_gid) != 0 || setuid(found->pw_uid) != 0)
            _exit(9);
        try {
            _exit(work() ? 0 : 1);
        } catch (...) {
            _exit(2);
        }
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

// ------------------------------------------------------------ a real reader

void test_answers_found_and_missing_digests(void **state) {
    World &w = the_world(state);
    start(w);
    const auto found = query_usage(w.socket, {w.used, w.unused, w.used});
    assert_int_equal(found.size(), 1);
    const Usage &usage = found.at(w.used);
    assert_int_equal(usage.last_used, used_at);
    assert_int_equal(usage.uses, 3);
    assert_string_equal(usage.last_used_ip.c_str(), "192.0.2.7");
    assert_true(query_usage(w.socket, {}).empty());
    assert_true(query_usage(w.socket, {w.unused}).empty());

    // More than one question holds: asked in batches, every one answered.
    std::vector<Digest> many(usage_reader_max_digests + 5);
    for (Digest &digest : many) digest = new_digest();
    many.back() = w.also_used;
    many.front() = w.used;
    const auto answered = query_usage(w.socket, many);
    assert_int_equal(answered.size(), 2);
    assert_true(answered.at(w.also_used).last_used_ip.empty());
    assert_int_equal(answered.at(w.used).uses, 3);
}

void test_reader_is_nobody_of_the_store_group_with_nothing_of_its_parent(void **state) {
    World &w = the_world(state);
    const pid_t pid = start(w);
    auto status = status_of(pid);
    const std::string nobody = std::to_string(uid_of("nobody")), www = std::to_string(gid_of("www-data"));
    assert_string_equal(status["Uid"].c_str(), (nobody + "\t" + nobody + "\t" + nobody + "\t" + nobody).c_str());
    assert_string_equal(status["Gid"].c_str(), (www + "\t" + www + "\t" + www + "\t" + www).c_str());
    assert_string_equal(status["Groups"].c_str(), www.c_str());
    assert_string_equal(status["NoNewPrivs"].c_str(), "1");
    assert_string_equal(status["CapEff"].c_str(), "0000000000000000");
    assert_string_equal(status["Name"].c_str(), "cptoken-usage");

    // Its descriptors: stdin, stdout and stderr on /dev/null, and its socket.
    const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
    std::vector<std::string> fds;
    for (const auto &entry : std::filesystem::directory_iterator(fd_dir)) {
        const std::string target = std::filesystem::read_symlink(entry.path()).string();
        fds.push_back(entry.path().filename().string() + " " + (target.starts_with("socket:") ? "socket" : target));
    }
    std::sort(fds.begin(), fds.end());
    assert_int_equal(fds.size(), 4);
    assert_string_equal(fds[0].c_str(), "0 /dev/null");
    assert_string_equal(fds[1].c_str(), "1 /dev/null");
    assert_string_equal(fds[2].c_str(), "2 /dev/null");
    assert_true(fds[3].ends_with(" socket"));

    // The socket: 0600, its client's.
    struct stat st{};
    assert_int_equal(lstat(w.socket.c_str(), &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_uid, uid_of("daemon"));
}

void test_only_its_client_can_connect(void **state) {
    World &w = the_world(state);
    start(w);
    const Digest used = w.used;
    const std::string socket = w.socket;
    // The manager's user asks and gets the use.
    assert_int_equal(as_user("daemon", [&] { return query_usage(socket, {used}).size() == 1; }), 0);
    // httpd's user may not even connect: the socket is the client's alone.
    assert_int_equal(as_user("www-data", [&] {
                         try {
                             query_usage(socket, {used});
                         } catch (const StoreError &e) {
                             return e.kind() == StoreError::Kind::access &&
                                    std::string(e.what()).find("Permission denied") != std::string::npos;
                         }
                         return false;
                     }),
                     0);
    // Nor nobody of the store's group, whom the reader itself runs as.
    assert_int_equal(as_user("nobody", [&] {
                         try {
                             query_usage(socket, {used});
                         } catch (const StoreError &) {
                             return true;
                         }
                         return false;
                     }),
                     0);
}

// httpd's group overwrote the table: the question asked meanwhile fails
// (the child answering it refuses the file), the reader lives on, and
// answers again once the table is good.
void test_a_broken_usage_store_fails_one_question_not_the_reader(void **state) {
    World &w = the_world(state);
    const std::string file = w.store + "/usage.slots", saved = fx(state).tmp + "/usage.slots.good";
    std::filesystem::copy_file(file, saved);
    const pid_t pid = start(w);
    {
        std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
        f.write("garbage!", 8);
    }
    const std::string message = EXPECT_STORE_ERROR(corrupt, query_usage(w.socket, {w.used}));
    assert_non_null(strstr(message.c_str(), "usage.slots"));
    assert_true(alive(pid));
    std::filesystem::copy_file(saved, file, std::filesystem::copy_options::overwrite_existing);
    assert_int_equal(query_usage(w.socket, {w.used}).at(w.used).uses, 3);
    assert_true(alive(pid));
}

void test_a_missing_usage_store_is_said(void **state) {
    World &w = the_world(state);
    start(w);
    assert_int_equal(unlink((w.store + "/usage.slots").c_str()), 0);
    const std::string message = EXPECT_STORE_ERROR(missing, query_usage(w.socket, {w.used}));
    assert_non_null(strstr(message.c_str(), w.store.c_str()));
}

void test_reader_dies_with_its_parent(void **state) {
    World &w = the_world(state);
    int pipe_fds[2];
    assert_int_equal(pipe(pipe_fds), 0);
    const pid_t parent = fork();
    if (parent == 0) {
        try {
            const pid_t reader = start_usage_reader(w.store, w.socket, uid_of("daemon"));
            (void)!write(pipe_fds[1], &reader, sizeof reader);
        } catch (...) {
        }
        _exit(0);
    }
    close(pipe_fds[1]);
    pid_t reader = -1;
    assert_int_equal(read(pipe_fds[0], &reader, sizeof reader), sizeof reader);
    close(pipe_fds[0]);
    assert_int_equal(waitpid(parent, nullptr, 0), parent);
    for (int i = 0; i < 1000 && !ended(reader); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    assert_true(ended(reader));
    EXPECT_STORE_ERROR(access, query_usage(w.socket, {w.used}));
}

void test_refuses_a_socket_others_could_swap(void **state) {
    World &w = the_world(state);
    const uid_t daemon = uid_of("daemon");
    assert_int_equal(chmod(w.socket_dir.c_str(), 01777), 0);
    std::string message = EXPECT_STORE_ERROR(access, start_usage_reader(w.store, w.socket, daemon));
    assert_non_null(strstr(message.c_str(), "root's and writable by no one else"));
    assert_int_equal(chmod(w.socket_dir.c_str(), 0755), 0);
    assert_int_equal(chown(w.socket_dir.c_str(), daemon, static_cast<gid_t>(-1)), 0);
    EXPECT_STORE_ERROR(access, start_usage_reader(w.store, w.socket, daemon));
    assert_int_equal(chown(w.socket_dir.c_str(), 0, static_cast<gid_t>(-1)), 0);
    // Something else at the socket's path is left alone.
    { std::ofstream(w.socket) << "not a socket\n"; }
    message = EXPECT_STORE_ERROR(access, start_usage_reader(w.store, w.socket, daemon));
    assert_non_null(strstr(message.c_str(), "not a socket"));
    assert_int_equal(unlink(w.socket.c_str()), 0);
    // A socket left by a reader before is replaced.
    start(w);
    stop_reader(w);
    start(w);
    assert_int_equal(query_usage(w.socket, {w.used}).size(), 1);
    // No store, no reader.
    EXPECT_STORE_ERROR(missing, start_usage_reader(fx(state).tmp + "/none", w.socket_dir + "/other.sock", daemon));
    EXPECT_STORE_ERROR(access, start_usage_reader(w.store, std::string(200, 'x'), daemon));
}

// A question straight to the socket; the answer as it comes.
std::string raw_question(const std::string &socket, const std::string &question) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strcpy(address.sun_path, socket.c_str());
    assert_int_equal(connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof address), 0);
    std::size_t sent = 0;
    while (sent < question.size()) {
        const ssize_t n = send(fd, question.data() + sent, question.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;  // the reader may stop reading a question it refuses
        sent += static_cast<std::size_t>(n);
    }
    std::string answer;
    char chunk[4096];
    for (ssize_t n; (n = read(fd, chunk, sizeof chunk)) > 0;) answer.append(chunk, static_cast<std::size_t>(n));
    close(fd);
    return answer;
}

void test_reader_refuses_bad_questions(void **state) {
    World &w = the_world(state);
    start(w);
    std::string too_many;
    for (std::size_t i = 0; i <= usage_reader_max_digests; ++i) too_many += digest_hex(new_digest()) + "\n";
    assert_true(raw_question(w.socket, too_many + "\n").starts_with("error "));
    assert_true(raw_question(w.socket, "not a digest\n\n").starts_with("error "));
    assert_true(raw_question(w.socket, std::string(100000, 'a')).starts_with("error "));
    // A good question after them is answered.
    const std::string answer = raw_question(w.socket, digest_hex(w.used) + "\n\n");
    assert_string_equal(answer.c_str(), (usage_line(usage_key(w.used), Usage{used_at, "192.0.2.7", 3}) + "\nend\n").c_str());
}

// ------------------------------------------------------------ a hostile reader

// A fake reader at SOCKET that answers one question with `answer` (after
// reading the question to its empty line), then closes.
struct FakeReader {
    std::string socket;
    int listener = -1;
    std::thread thread;

    FakeReader(const std::string &path, std::string answer, bool stall = false) : socket(path) {
        unlink(path.c_str());
        listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::strcpy(address.sun_path, path.c_str());
        assert_int_equal(bind(listener, reinterpret_cast<sockaddr *>(&address), sizeof address), 0);
        assert_int_equal(listen(listener, 1), 0);
        thread = std::thread([this, answer = std::move(answer), stall] {
            const int fd = accept(listener, nullptr, nullptr);
            if (fd < 0) return;
            std::string question;
            char chunk[4096];
            while (question.find("\n\n") == std::string::npos) {
                const ssize_t n = read(fd, chunk, sizeof chunk);
                if (n <= 0) break;
                question.append(chunk, static_cast<std::size_t>(n));
            }
            if (stall) {
                (void)!read(fd, chunk, 1);  // until the asker gives up
            } else {
                std::size_t sent = 0;
                while (sent < answer.size()) {
                    const ssize_t n = send(fd, answer.data() + sent, answer.size() - sent, MSG_NOSIGNAL);
                    if (n <= 0) break;
                    sent += static_cast<std::size_t>(n);
                }
            }
            close(fd);
        });
    }
    ~FakeReader() {
        thread.join();
        close(listener);
    }
};

void test_hostile_answers_throw(void **state) {
    const std::string socket = fx(state).tmp + "/fake.sock";
    const Digest asked = new_digest(), other = new_digest();
    const Seconds now = now_seconds();
    const std::string good = usage_line(usage_key(asked), Usage{used_at, "192.0.2.7", 3});
    {
        FakeReader fake(socket, good + "\nend\n");
        assert_int_equal(query_usage(socket, {asked}).at(asked).uses, 3);  // the fake itself is sound
    }
    const std::vector<std::pair<const char *, std::string>> corrupt_answers = {
        {"not a usage line", "hello\nend\n"},
        {"a digest not asked", usage_line(usage_key(other), Usage{used_at, "", 1}) + "\nend\n"},
        {"the same digest twice", good + "\n" + good + "\nend\n"},
        {"a use in the future", usage_line(usage_key(asked), Usage{now + 86400, "", 1}) + "\nend\n"},
        {"a use before 2000", good.substr(0, 32) + " 12 1 -\nend\n"},
        {"an address that does not parse", good.substr(0, 32) + " 1767225600 1 \x1b[2J\nend\n"},
        {"uppercase hex", [&] {
             std::string line = good;
             for (std::size_t i = 0; i < 32; ++i) line[i] = static_cast<char>(std::toupper(line[i]));
             return line + "\nend\n";
         }()},
        {"a NUL in the line", good.substr(0, 10) + std::string(1, '\0') + good.substr(11) + "\nend\n"},
        {"a count that is too long", good.substr(0, 32) + " 1767225600 123456789012345678901234567890 -\nend\n"},
        {"more after the end", good + "\nend\n" + good + "\n"},
        {"a line too long", std::string(70000, '7') + "\nend\n"},
    };
    for (const auto &[what, answer] : corrupt_answers) {
        FakeReader fake(socket, answer);
        try {
            query_usage(socket, {asked});
            fail_msg("%s: no exception", what);
        } catch (const StoreError &e) {
            if (e.kind() != StoreError::Kind::corrupt)
                fail_msg("%s: kind %s (%s), expected corrupt", what, kind_name(e.kind()), e.what());
        }
    }
    const std::vector<std::pair<const char *, std::string>> cut_answers = {
        {"no end line", good + "\n"},
        {"nothing at all", ""},
        {"a line cut short", good.substr(0, 50)},
    };
    for (const auto &[what, answer] : cut_answers) {
        FakeReader fake(socket, answer);
        const std::string message = EXPECT_STORE_ERROR(access, query_usage(socket, {asked}));
        if (message.empty()) fail_msg("%s", what);
    }
    {
        // The reader's own refusal keeps its kind; what it says is made printable.
        FakeReader fake(socket, "error 2 usage.slots is \x1b]0;owned\x07 broken\n");
        const std::string message = EXPECT_STORE_ERROR(corrupt, query_usage(socket, {asked}));
        for (const char c : message) assert_true(c >= 0x20 && c < 0x7f);
    }
    {
        FakeReader fake(socket, "", true);
        const auto started = std::chrono::steady_clock::now();
        const std::string message = EXPECT_STORE_ERROR(access, query_usage(socket, {asked}));
        assert_non_null(strstr(message.c_str(), "no answer within"));
        assert_true(std::chrono::steady_clock::now() - started < usage_reader_timeout + std::chrono::seconds(5));
    }
}

// Random damage to a good answer: every outcome is an answer of asked
// digests only, each with values in range, or a StoreError; never a crash.
void test_damaged_answers_never_pass_a_bad_value(void **state) {
    const std::string socket = fx(state).tmp + "/fake.sock";
    std::vector<Digest> asked(3);
    for (Digest &digest : asked) digest = new_digest();
    std::string good;
    for (const Digest &digest : asked) good += usage_line(usage_key(digest), Usage{used_at, "2001:db8::1", 7}) + "\n";
    good += "end\n";
    std::mt19937 random(20261206);
    const std::string bytes = "0123456789abcdef ABC-:.\n\x01\xff\x00";
    for (int round = 0; round < 300; ++round) {
        std::string answer = good;
        const int changes = 1 + static_cast<int>(random() % 4);
        for (int i = 0; i < changes; ++i) {
            const std::size_t at = random() % answer.size();
            switch (random() % 3) {
                case 0: answer[at] = bytes[random() % bytes.size()]; break;
                case 1: answer.erase(at, 1 + random() % 8); break;
                default: answer.insert(at, std::string(1 + random() % 3, bytes[random() % bytes.size()])); break;
            }
        }
        FakeReader fake(socket, answer);
        try {
            const auto found = query_usage(socket, asked);
            for (const auto &[digest, usage] : found) {
                assert_true(std::find(asked.begin(), asked.end(), digest) != asked.end());
                assert_true(usage.last_used >= 946684800 && usage.last_used <= now_seconds() + usage_clock_skew);
                for (const char c : usage.last_used_ip) assert_true(std::isxdigit(c) || c == ':' || c == '.');
            }
        } catch (const StoreError &) {
        }
    }
}

}  // namespace

int main(void) {
    if (geteuid() != 0) {
        print_message("test_usage_reader: skipped, needs root (the reader becomes user nobody)\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_answers_found_and_missing_digests, setup_world, teardown_world),
        cmocka_unit_test_setup_teardown(test_reader_is_nobody_of_the_store_group_with_nothing_of_its_parent,
                                        setup_world, teardown_world),
        cmocka_unit_test_setup_teardown(test_only_its_client_can_connect, setup_world, teardown_world),
        cmocka_unit_test_setup_teardown(test_a_broken_usage_store_fails_one_question_not_the_reader, setup_world,
                                        teardown_world),
        cmocka_unit_test_setup_teardown(test_a_missing_usage_store_is_said, setup_world, teardown_world),
        cmocka_unit_test_setup_teardown(test_reader_dies_with_its_parent, setup_world, teardown_world),
        cmocka_unit_test_setup_teardown(test_refuses_a_socket_others_could_swap, setup_world, teardown_world),
        cmocka_unit_test_setup_teardown(test_reader_refuses_bad_questions, setup_world, teardown_world),
        cmocka_unit_test_setup_teardown(test_hostile_answers_throw, setup_world, teardown_world),
        cmocka_unit_test_setup_teardown(test_damaged_answers_never_pass_a_bad_value, setup_world, teardown_world),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
