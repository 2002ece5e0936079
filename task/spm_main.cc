// fedge-spm: SentencePiece in a process of its own (why: see
// task/sentencepiece_adapter.h). Links libsentencepiece and nothing of
// fedge, LibTorch or protobuf.
//
//   fedge-spm train --input=... --model_prefix=... [spm_train flags]
//   fedge-spm serve MODEL_FILE
//
// serve answers on stdout, first with "<vocab> <eos> <bos>\n" and one line
// per piece holding its input byte length, then one reply per request on
// stdin:
//   E <bytes>\n<text>     ->  "<n> <id>...\n", or "! <message>\n"
//   D <n> <id>...\n       ->  "<bytes>\n<text>"
// It exits at end of input.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace {

int PieceBytes(const sentencepiece::SentencePieceProcessor& p, int id) {
  if (p.IsByte(id)) return 1;
  if (p.IsControl(id) || p.IsUnknown(id) || p.IsUnused(id)) return 0;
  static const std::string kMark = "\xe2\x96\x81";  // U+2581.
  const std::string& piece = p.IdToPiece(id);
  int bytes = 0;
  for (size_t i = 0; i < piece.size(); ++bytes) {
    i += piece.compare(i, kMark.size(), kMark) == 0 ? kMark.size() : 1;
  }
  return bytes;
}

int Serve(const char* model) {
  sentencepiece::SentencePieceProcessor p;
  const sentencepiece::util::Status loaded = p.Load(model);
  if (!loaded.ok()) {
    std::printf("! %s\n", loaded.ToString().c_str());
    return 1;
  }
  std::printf("%d %d %d\n", p.GetPieceSize(), p.eos_id(), p.bos_id());
  for (int id = 0; id < p.GetPieceSize(); ++id) {
    std::printf("%d\n", PieceBytes(p, id));
  }
  std::fflush(stdout);
  char command;
  while (std::cin.get(command)) {
    if (command == 'E') {
      size_t size = 0;
      std::cin >> size;
      std::cin.get();  // The newline.
      std::string text(size, '\0');
      if (!std::cin.read(text.data(), static_cast<std::streamsize>(size))) {
        return 1;
      }
      std::vector<int> ids;
      const sentencepiece::util::Status s = p.Encode(text, &ids);
      if (!s.ok()) {
        std::printf("! %s\n", s.ToString().c_str());
      } else {
        std::string line = std::to_string(ids.size());
        for (int id : ids) line += " " + std::to_string(id);
        std::printf("%s\n", line.c_str());
      }
    } else if (command == 'D') {
      size_t n = 0;
      std::cin >> n;
      std::vector<int> ids(n);
      for (int& id : ids) std::cin >> id;
      std::cin.get();
      std::string text;
      if (!p.Decode(ids, &text).ok()) text.clear();
      std::printf("%zu\n", text.size());
      std::fwrite(text.data(), 1, text.size(), stdout);
    } else {
      return 2;
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "serve" && argc == 3) return Serve(argv[2]);
  if (mode == "train") {
    std::string args;
    for (int i = 2; i < argc; ++i)
      args += std::string(i > 2 ? " " : "") + argv[i];
    const sentencepiece::util::Status s =
        sentencepiece::SentencePieceTrainer::Train(args);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
    return 0;
  }
  std::fprintf(stderr,
               "usage: fedge-spm train FLAGS... | fedge-spm serve MODEL\n"
               "SentencePiece for fedge in a process of its own.\n");
  return 2;
}
