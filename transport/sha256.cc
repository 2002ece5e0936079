#include "transport/sha256.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <glog/logging.h>
#include <openssl/evp.h>

#include "model/file_io.h"

namespace fedge::transport {

struct Sha256::Context {
  struct Deleter {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
  };
  std::unique_ptr<EVP_MD_CTX, Deleter> ctx{EVP_MD_CTX_new()};
};

Sha256::Sha256() : context_(std::make_unique<Context>()) {
  // Failing to set up SHA-256 means a broken OpenSSL install: a bug here,
  // not bad input.
  CHECK(context_->ctx != nullptr);
  CHECK_EQ(EVP_DigestInit_ex(context_->ctx.get(), EVP_sha256(), nullptr), 1);
}

Sha256::~Sha256() = default;

void Sha256::Update(absl::string_view data) {
  CHECK_EQ(EVP_DigestUpdate(context_->ctx.get(), data.data(), data.size()), 1);
}

std::string Sha256::Finish() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  CHECK_EQ(EVP_DigestFinal_ex(context_->ctx.get(), digest, &length), 1);
  return std::string(reinterpret_cast<const char*>(digest), length);
}

std::string Sha256Of(absl::string_view data) {
  Sha256 hasher;
  hasher.Update(data);
  return hasher.Finish();
}

absl::StatusOr<std::string> Sha256OfFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return model::ErrnoToStatus(errno, "cannot open", path);
  Sha256 hasher;
  std::string buffer(1 << 20, '\0');
  while (true) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      return model::ErrnoToStatus(error, "cannot read", path);
    }
    if (n == 0) break;
    hasher.Update(absl::string_view(buffer.data(), n));
  }
  ::close(fd);
  return hasher.Finish();
}

std::string ToHex(absl::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

}  // namespace fedge::transport
