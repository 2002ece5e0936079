#include "task/sentencepiece_adapter.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include <sys/wait.h>

extern char** environ;

namespace fedge::task::spm {
namespace {

std::string HelperPath() {
  if (const char* env = std::getenv("FEDGE_SPM"); env != nullptr && *env) {
    return env;
  }
  std::error_code error;
  const std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    const std::filesystem::path beside = self.parent_path() / "fedge-spm";
    if (::access(beside.c_str(), X_OK) == 0) return beside.string();
  }
#ifdef FEDGE_SPM_BUILD_PATH
  if (::access(FEDGE_SPM_BUILD_PATH, X_OK) == 0) return FEDGE_SPM_BUILD_PATH;
#endif
  return "fedge-spm";  // posix_spawnp searches $PATH.
}

// Starts `argv` with its stdin/stdout on pipes (stdin_fd, stdout_fd: our
// ends). Returns the pid, or -1 with `error` set.
// With `merge_stderr`, the child's stderr goes to the stdout pipe too.
pid_t Spawn(const std::vector<std::string>& args, bool merge_stderr,
            int* stdin_fd, int* stdout_fd, std::string* error) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
    *error = std::string("pipe: ") + std::strerror(errno);
    return -1;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  if (merge_stderr) posix_spawn_file_actions_adddup2(&actions, out[1], 2);
  std::vector<char*> argv;
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc =
      ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    *error = "cannot start " + args[0] +
             " (the SentencePiece helper; set "
             "FEDGE_SPM or put it on PATH): " +
             std::strerror(rc);
    return -1;
  }
  *stdin_fd = in[1];
  *stdout_fd = out[0];
  return pid;
}

}  // namespace

struct Processor::Pipes {
  pid_t pid = -1;
  FILE* to = nullptr;    // The helper's stdin.
  FILE* from = nullptr;  // The helper's stdout.
  std::mutex mu;         // One exchange at a time.

  ~Pipes() {
    if (to != nullptr) std::fclose(to);  // The helper exits at EOF.
    if (from != nullptr) std::fclose(from);
    if (pid > 0) {
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
  }
  bool ReadLine(std::string* line) {
    line->clear();
    int c;
    while ((c = std::fgetc(from)) != EOF && c != '\n') line->push_back(char(c));
    return c == '\n';
  }
};

Processor::Processor(std::unique_ptr<Pipes> pipes, std::vector<int> byte_length,
                     int eos_id, int bos_id)
    : pipes_(std::move(pipes)),
      byte_length_(std::move(byte_length)),
      eos_id_(eos_id),
      bos_id_(bos_id) {}

Processor::~Processor() = default;

std::unique_ptr<Processor> Processor::Load(const std::string& path,
                                           std::string* error) {
  // A write to a helper that died must be an error, not a SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  auto pipes = std::make_unique<Pipes>();
  int in = -1, out = -1;
  pipes->pid = Spawn({HelperPath(), "serve", path}, /*merge_stderr=*/false, &in,
                     &out, error);
  if (pipes->pid < 0) return nullptr;
  pipes->to = ::fdopen(in, "w");
  pipes->from = ::fdopen(out, "r");
  std::string line;
  if (!pipes->ReadLine(&line)) {
    *error = "the SentencePiece helper exited before answering";
    return nullptr;
  }
  if (line.rfind("! ", 0) == 0) {
    *error = line.substr(2);
    return nullptr;
  }
  int vocab = 0, eos = -1, bos = -1;
  if (std::sscanf(line.c_str(), "%d %d %d", &vocab, &eos, &bos) != 3 ||
      vocab < 1) {
    *error = "the SentencePiece helper answered '" + line + "'";
    return nullptr;
  }
  std::vector<int> bytes(static_cast<size_t>(vocab));
  for (int& b : bytes) {
    if (!pipes->ReadLine(&line)) {
      *error = "the SentencePiece helper's vocabulary is truncated";
      return nullptr;
    }
    b = std::atoi(line.c_str());
  }
  return std::unique_ptr<Processor>(
      new Processor(std::move(pipes), std::move(bytes), eos, bos));
}

bool Processor::Encode(const std::string& text, std::vector<int>* ids,
                       std::string* error) {
  std::lock_guard<std::mutex> lock(pipes_->mu);
  std::fprintf(pipes_->to, "E %zu\n", text.size());
  std::fwrite(text.data(), 1, text.size(), pipes_->to);
  std::string line;
  if (std::fflush(pipes_->to) != 0 || !pipes_->ReadLine(&line)) {
    *error = "the SentencePiece helper died";
    return false;
  }
  if (line.rfind("! ", 0) == 0) {
    *error = line.substr(2);
    return false;
  }
  ids->clear();
  const char* p = line.c_str();
  char* end = nullptr;
  const long n = std::strtol(p, &end, 10);
  for (long i = 0; i < n; ++i) {
    p = end;
    ids->push_back(static_cast<int>(std::strtol(p, &end, 10)));
    if (end == p) {
      *error = "the SentencePiece helper's answer is truncated";
      return false;
    }
  }
  return true;
}

std::string Processor::Decode(const std::vector<int>& ids) {
  std::lock_guard<std::mutex> lock(pipes_->mu);
  std::string request = "D " + std::to_string(ids.size());
  for (int id : ids) request += " " + std::to_string(id);
  request += "\n";
  std::fwrite(request.data(), 1, request.size(), pipes_->to);
  std::string line;
  if (std::fflush(pipes_->to) != 0 || !pipes_->ReadLine(&line)) return "";
  std::string text(std::strtoul(line.c_str(), nullptr, 10), '\0');
  if (std::fread(text.data(), 1, text.size(), pipes_->from) != text.size()) {
    return "";
  }
  return text;
}

int Processor::ByteLength(int id) const {
  return id >= 0 && id < vocab_size() ? byte_length_[static_cast<size_t>(id)]
                                      : 0;
}

bool Train(const std::vector<std::string>& args, std::string* error) {
  std::vector<std::string> argv = {HelperPath(), "train"};
  argv.insert(argv.end(), args.begin(), args.end());
  int in = -1, out = -1;
  const pid_t pid = Spawn(argv, /*merge_stderr=*/true, &in, &out, error);
  if (pid < 0) return false;
  ::close(in);
  std::string output;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(out, buffer, sizeof(buffer))) > 0)
    output.append(buffer, n);
  ::close(out);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    // Its log ends with the reason.
    if (output.size() > 2000)
      output = "..." + output.substr(output.size() - 2000);
    *error = "the SentencePiece trainer failed (exit status " +
             std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) +
             "): " + output;
    return false;
  }
  return true;
}

}  // namespace fedge::task::spm
