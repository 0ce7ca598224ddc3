// cairnctl-attest: `cairnctl attest ...`, which cairnctl starts in its place (see main.cpp).
#include <iostream>
#include <string>
#include <vector>

#include "attestation/agent_cli.hpp"

int main(int argc, char** argv) {
    return cairn::attestation::attest_command(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}
