// The one place fedge touches SentencePiece (Debian's libsentencepiece-dev),
// through a helper process, fedge-spm.
//
// Why a process: Debian 12's libsentencepiece.so.0 carries its own copy of
// protobuf-lite (an older version) and exports its ~1,600 symbols. Loaded
// into a process that also has the system's libprotobuf (every LibTorch and
// gRPC process does), the two copies interpose each other's symbols and
// the process crashes during static initialisation (seen here: a SIGSEGV in
// ReflectionOps::FindInitializationErrors before main). No static
// libsentencepiece is packaged to hide the copy behind -Bsymbolic, and
// dlopen with RTLD_DEEPBIND cannot run under AddressSanitizer. So
// fedge-spm (task/spm_main.cc) links SentencePiece and nothing else, and
// this adapter talks to it over pipes: one exchange per batch of text.
//
// The helper is found as $FEDGE_SPM, else fedge-spm beside the running
// binary, else the build tree's bin/fedge-spm, else on $PATH.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fedge::task::spm {

// Thread-safe: calls are serialised on the helper's pipes.
class Processor {
 public:
  // Starts a helper on the model file `path`. Null, with `error` set, if
  // the helper cannot start or the model does not load.
  static std::unique_ptr<Processor> Load(const std::string& path,
                                         std::string* error);
  ~Processor();  // Ends the helper.

  // False, with `error` set, if the helper refuses the text or has died.
  bool Encode(const std::string& text, std::vector<int>* ids,
              std::string* error);
  // The text of `ids` ("" if the helper has died).
  std::string Decode(const std::vector<int>& ids);
  int vocab_size() const { return static_cast<int>(byte_length_.size()); }
  int eos_id() const { return eos_id_; }  // -1 if the model has none.
  int bos_id() const { return bos_id_; }  // -1 if the model has none.
  // UTF-8 bytes of input that piece `id` stands for: 1 for a byte-fallback
  // piece, 0 for control and unknown pieces, otherwise the piece's text with
  // the word-boundary mark U+2581 counted as the one space it replaces.
  int ByteLength(int id) const;

 private:
  struct Pipes;
  Processor(std::unique_ptr<Pipes> pipes, std::vector<int> byte_length,
            int eos_id, int bos_id);
  std::unique_ptr<Pipes> pipes_;
  std::vector<int> byte_length_;
  int eos_id_, bos_id_;
};

// Runs SentencePiece's trainer (in a fedge-spm process) with command-line
// style `args` ("--input=... --model_prefix=..."). False, with `error` set,
// on failure.
bool Train(const std::vector<std::string>& args, std::string* error);

}  // namespace fedge::task::spm
