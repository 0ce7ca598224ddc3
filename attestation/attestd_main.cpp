// cairn-attestd: the boot attestation agent (attestation/agent_cli.cpp).
#include <iostream>

#include "attestation/agent_cli.hpp"

int main(int argc, char** argv) {
    return cairn::attestation::attestd_main(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}
