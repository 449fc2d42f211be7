#include "keys/envelope.h"

#include "crypto/aead.h"
#include "crypto/encoding.h"

namespace trellis::secrets::envelope {
namespace {

std::string partAad(std::string_view aad, std::string_view part, uint32_t kek_version) {
  return std::string(aad) + associatedData({{"part", part}, {"kek", std::to_string(kek_version)}});
}

}  // namespace

Result<Envelope> seal(const Keyring& ring, std::string_view plaintext, std::string_view aad) {
  const Kek& kek = ring.current();
  SecureBuffer data_key = randomBytes(aead::kKeyBytes);
  if (data_key.empty()) return Status::internal("the random generator failed");
  auto box = aead::seal(data_key, plaintext, partAad(aad, "value", kek.version));
  if (!box) return box.status();
  auto wrapped = aead::seal(kek.key, data_key.view(), partAad(aad, "data-key", kek.version));
  if (!wrapped) return wrapped.status();
  return Envelope{kek.version, std::move(*wrapped), std::move(*box)};
}

Result<SecureBuffer> open(const Keyring& ring, const Envelope& env, std::string_view aad) {
  auto kek = ring.find(env.kek_version);
  if (!kek) return kek.status();
  auto data_key =
      aead::open((*kek)->key, env.wrapped_key, partAad(aad, "data-key", env.kek_version));
  if (!data_key) return data_key.status();
  return aead::open(*data_key, env.box, partAad(aad, "value", env.kek_version));
}

Result<Envelope> rewrap(const Keyring& ring, const Envelope& env, std::string_view aad) {
  auto plain = open(ring, env, aad);
  if (!plain) return plain.status();
  return seal(ring, plain->view(), aad);
}

}  // namespace trellis::secrets::envelope
