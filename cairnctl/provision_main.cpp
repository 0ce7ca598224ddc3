// cairnctl-provision: `cairnctl provision ...`, which cairnctl starts in its place (see main.cpp).
#include <iostream>
#include <string>
#include <vector>

#include "provisioning/provision_cli.hpp"

int main(int argc, char** argv) {
    return cairn::provisioning::provision_command(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}
