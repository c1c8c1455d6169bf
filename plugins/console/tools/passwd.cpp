// grove-console-passwd: prints the argon2id hash of a password (read from stdin, one line)
// for the console plugin's `operators[].password_hash`. Without a terminal echo when stdin
// is one; the password never appears on a command line (ps would show it).

#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "auth.hpp"

int main(int argc, char** argv) {
  if (argc > 1) {
    std::fprintf(stderr, "usage: %s  (reads the password from stdin, prints its hash)\n", argv[0]);
    return 2;
  }
  bool tty = ::isatty(STDIN_FILENO) == 1;
  termios old{};
  if (tty) {
    std::fprintf(stderr, "password: ");
    ::tcgetattr(STDIN_FILENO, &old);
    auto quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string password;
  std::getline(std::cin, password);
  if (tty) {
    ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::fprintf(stderr, "\n");
  }
  if (password.empty()) {
    std::fprintf(stderr, "grove-console-passwd: empty password\n");
    return 1;
  }
  auto hash = grove::console::hash_password(password);
  if (hash.empty()) {
    std::fprintf(stderr, "grove-console-passwd: hashing failed (out of memory?)\n");
    return 1;
  }
  std::printf("%s\n", hash.c_str());
  return 0;
}
