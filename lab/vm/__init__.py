"""The lab's "EC2": Debian 12 virtual machines (qemu) booted with the user data the program renders."""
